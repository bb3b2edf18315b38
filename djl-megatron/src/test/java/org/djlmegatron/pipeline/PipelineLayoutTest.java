package org.djlmegatron.pipeline;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

/** Megatron's layer split: even, interleaved (chunk c of rank r is virtual stage c p + r), uneven. */
class PipelineLayoutTest {

    @Test
    void evenAndInterleavedSplits() {
        assertThat(PipelineLayout.of(8, 4, 1, null, null).describe())
                .isEqualTo("rank 0: layers 0-1, rank 1: layers 2-3, rank 2: layers 4-5, rank 3: layers 6-7");
        // PP=2, VP=2, 4 layers: rank 0 holds layers 0 and 2, rank 1 layers 1 and 3
        assertThat(PipelineLayout.of(4, 2, 2, null, null).describe())
                .isEqualTo("rank 0 chunk 0: layers 0-0, rank 1 chunk 0: layers 1-1, "
                        + "rank 0 chunk 1: layers 2-2, rank 1 chunk 1: layers 3-3");
    }

    @Test
    void unevenSplits() {
        assertThat(PipelineLayout.of(3, 2, 1, 1, null).describe()).isEqualTo("rank 0: layers 0-0, rank 1: layers 1-2");
        assertThat(PipelineLayout.of(6, 3, 1, null, 2).describe())
                .isEqualTo("rank 0: layers 0-1, rank 1: layers 2-3, rank 2: layers 4-5");
        assertThat(PipelineLayout.of(8, 4, 1, 1, 1).describe())
                .isEqualTo("rank 0: layers 0-0, rank 1: layers 1-3, rank 2: layers 4-6, rank 3: layers 7-7");
    }

    @Test
    void impossibleSplitsNameTheNumbers() {
        assertThatThrownBy(() -> PipelineLayout.of(6, 4, 1, null, null))
                .hasMessage("--num-layers 6 is not divisible by --pipeline-model-parallel-size 4 = 4");
        assertThatThrownBy(() -> PipelineLayout.of(8, 2, 3, null, null))
                .hasMessage("--num-layers 8 is not divisible by --pipeline-model-parallel-size 2 x "
                        + "--virtual-pipeline-model-parallel-size 3 = 6");
        assertThatThrownBy(() -> PipelineLayout.of(8, 4, 1, 1, null))
                .hasMessageContaining("the other 3 stage(s) would share 7 layer(s) unevenly or not at all");
        assertThatThrownBy(() -> PipelineLayout.of(4, 1, 1, 1, null))
                .hasMessageContaining("need --pipeline-model-parallel-size > 1");
    }
}
