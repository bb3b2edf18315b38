package org.djlmegatron.pipeline;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

/**
 * The orders are Megatron-LM's (megatron/core/pipeline_parallel/schedules.py): the expected
 * strings below were derived by hand from its get_schedule_table, get_pp_rank_microbatches and
 * the warm-up / steady / cool-down loops, not from this class.
 */
class PipelineScheduleTest {

    @Test
    void interleavedTwoStagesTwoChunksFiveMicroBatchesIsMegatrons() {
        // Megatron's own example table (PP2, VP2, M5, N3): virtual micro-batch k -> (mb, chunk)
        // mb 0 1 2 0 1 2 3 4 3 4, chunk 0 0 0 1 1 1 0 0 1 1.
        // Rank 0 warms up 2*(2-0-1) + (2-1)*3 = 5 forwards, rank 1 warms up 0 + 3 = 3; the k-th
        // backward runs chunk 1 - chunk(k) of micro-batch mb(k).
        PipelineSchedule r0 = PipelineSchedule.of(2, 0, 2, 5, 3, false);
        PipelineSchedule r1 = PipelineSchedule.of(2, 1, 2, 5, 3, false);
        assertThat(r0.warmup()).isEqualTo(5);
        assertThat(r1.warmup()).isEqualTo(3);
        assertThat(r0.describe()).isEqualTo(
                "F0.0 F1.0 F2.0 F0.1 F1.1 "
                + "F2.1 B0.1 F3.0 B1.1 F4.0 B2.1 F3.1 B0.0 F4.1 B1.0 "
                + "B2.0 B3.1 B4.1 B3.0 B4.0");
        assertThat(r1.describe()).isEqualTo(
                "F0.0 F1.0 F2.0 "
                + "F0.1 B0.1 F1.1 B1.1 F2.1 B2.1 F3.0 B0.0 F4.0 B1.0 F3.1 B2.0 F4.1 B3.1 "
                + "B4.1 B3.0 B4.0");
    }

    /**
     * A non-default {@code --microbatch-group-size-per-virtual-pipeline-stage 4} at P=2, V=2, 8
     * micro-batches, derived by hand from Megatron's {@code get_schedule_table} (groups of 4 run
     * through chunk 0 then chunk 1: table {@code 0 1 2 3 0 1 2 3 4 5 6 7 4 5 6 7}, chunks
     * {@code 0 0 0 0 1 1 1 1 0 0 0 0 1 1 1 1}) and {@code get_pp_rank_microbatches} (warm-up
     * {@code 2 (P - r - 1) + (V - 1) 4}: 6 on rank 0, 4 on rank 1); the k-th steady step runs
     * forward k + warm-up, then backward k on chunk {@code V - 1 - table chunk}.
     */
    @Test
    void interleavedGroupsOfFourOverEightMicroBatchesIsMegatrons() {
        PipelineSchedule r0 = PipelineSchedule.of(2, 0, 2, 8, 4, false);
        PipelineSchedule r1 = PipelineSchedule.of(2, 1, 2, 8, 4, false);
        assertThat(r0.warmup()).isEqualTo(6);
        assertThat(r1.warmup()).isEqualTo(4);
        assertThat(r0.describe()).isEqualTo("F0.0 F1.0 F2.0 F3.0 F0.1 F1.1 F2.1 B0.1 F3.1 B1.1 F4.0 B2.1 F5.0 B3.1 "
                + "F6.0 B0.0 F7.0 B1.0 F4.1 B2.0 F5.1 B3.0 F6.1 B4.1 F7.1 B5.1 B6.1 B7.1 B4.0 B5.0 B6.0 B7.0");
        assertThat(r1.describe()).isEqualTo("F0.0 F1.0 F2.0 F3.0 F0.1 B0.1 F1.1 B1.1 F2.1 B2.1 F3.1 B3.1 "
                + "F4.0 B0.0 F5.0 B1.0 F6.0 B2.0 F7.0 B3.0 F4.1 B4.1 F5.1 B5.1 F6.1 B6.1 F7.1 B7.1 B4.0 B5.0 B6.0 B7.0");
        // the default (groups of P = 2) interleaves chunks every two micro-batches: another order
        assertThat(PipelineSchedule.training(2, 0, 2, 8).describe()).isNotEqualTo(r0.describe());
    }

    @Test
    void fiveMicroBatchesInMegatronsDefaultGroupsOfTwoAreRefusedAsMegatronDoes() {
        // Megatron: 5 % 2 = 1 < PP 2 -> RuntimeError (dependency bubbles)
        assertThatThrownBy(() -> PipelineSchedule.training(2, 0, 2, 5))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("5 micro-batches in groups of 2 leave a last group of 1");
        assertThatThrownBy(() -> PipelineSchedule.of(2, 0, 2, 4, 5, false))
                .hasMessageContaining("--microbatch-group-size-per-virtual-pipeline-stage 5 must lie in [pipeline size 2, micro-batches 4]");
        assertThatThrownBy(() -> PipelineSchedule.training(1, 0, 2, 4))
                .hasMessageContaining("--virtual-pipeline-model-parallel-size 2 needs --pipeline-model-parallel-size > 1");
    }

    @Test
    void interleavedDefaultGroupsFourMicroBatches() {
        // table: (0,0)(1,0)(0,1)(1,1)(2,0)(3,0)(2,1)(3,1); rank 0 warm-up 2 + 2 = 4, rank 1: 2
        assertThat(PipelineSchedule.training(2, 0, 2, 4).describe()).isEqualTo(
                "F0.0 F1.0 F0.1 F1.1 F2.0 B0.1 F3.0 B1.1 F2.1 B0.0 F3.1 B1.0 B2.1 B3.1 B2.0 B3.0");
        assertThat(PipelineSchedule.training(2, 1, 2, 4).describe()).isEqualTo(
                "F0.0 F1.0 F0.1 B0.1 F1.1 B1.1 F2.0 B0.0 F3.0 B1.0 F2.1 B2.1 F3.1 B3.1 B2.0 B3.0");
    }

    @Test
    void oneFOneBWarmsUpPMinusRMinusOne() {
        assertThat(PipelineSchedule.training(4, 0, 1, 8).describe())
                .isEqualTo("F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7");
        assertThat(PipelineSchedule.training(4, 2, 1, 8).describe())
                .isEqualTo("F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 F6 B5 F7 B6 B7");
        assertThat(PipelineSchedule.training(4, 3, 1, 8).describe())
                .isEqualTo("F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7");
        // fewer micro-batches than stages: all warm-up
        assertThat(PipelineSchedule.training(4, 0, 1, 2).describe()).isEqualTo("F0 F1 B0 B1");
    }

    @Test
    void noPipeliningAndForwardOnly() {
        assertThat(PipelineSchedule.training(1, 0, 1, 3).describe()).isEqualTo("F0 B0 F1 B1 F2 B2");
        assertThat(PipelineSchedule.of(4, 1, 1, 3, 4, true).describe()).isEqualTo("F0 F1 F2");
        assertThat(PipelineSchedule.of(2, 0, 2, 4, 2, true).describe())
                .isEqualTo("F0.0 F1.0 F0.1 F1.1 F2.0 F3.0 F2.1 F3.1");
    }
}
