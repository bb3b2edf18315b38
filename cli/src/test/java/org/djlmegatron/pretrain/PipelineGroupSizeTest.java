package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;
import static org.djlmegatron.pretrain.TrajectoryParity.PP2;
import static org.djlmegatron.pretrain.TrajectoryParity.PP2_VP2;
import static org.djlmegatron.pretrain.TrajectoryParity.SINGLE;

import java.util.List;
import org.djlmegatron.pretrain.TrajectoryParity.Variant;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Test;

/**
 * {@code --microbatch-group-size-per-virtual-pipeline-stage} (Megatron's): the interleaved
 * schedule's micro-batches go through each chunk in groups of that size. It changes the order of
 * the passes, not what they compute: PP=2 x VP=2 with groups of 3 and 4 (8 micro-batches) and 3
 * (5 micro-batches, Megatron's own example, refused with the default groups of 2) follow the
 * one-rank trajectory, in training and evaluation; sizes Megatron refuses are refused before any
 * rank starts.
 */
class PipelineGroupSizeTest {

    private static List<String> base(int globalBatch) {
        return TrajectoryParity.args("--mock-data", "--num-layers", "4", "--hidden-size", "32",
                "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128", "--micro-batch-size", "1",
                "--global-batch-size", "" + globalBatch, "--train-iters", "6", "--lr", "3e-3",
                "--lr-decay-style", "constant", "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", "11");
    }

    private static Variant groups(int size) {
        return PP2_VP2.with(Variant.of("groups-" + size, "--microbatch-group-size-per-virtual-pipeline-stage", "" + size));
    }

    @Test
    void groupSizesFollowTheOneRankTrajectory() {
        List<String> eight = base(8);
        List<StepResult> reference = TrajectoryParity.run(eight, SINGLE);
        for (int g : new int[] {3, 4}) {
            TrajectoryParity.assertClose(reference, TrajectoryParity.run(eight, groups(g)), 1e-5, groups(g).name());
        }
        List<String> five = base(5);
        TrajectoryParity.assertClose(TrajectoryParity.run(five, SINGLE), TrajectoryParity.run(five, groups(3)), 1e-5,
                groups(3).name() + " of 5 micro-batches");
    }

    @Test
    void evaluationUsesTheSameGroups() {
        List<String> five = TrajectoryParity.replace(base(5), "--train-iters", "2");
        five.addAll(List.of("--eval-interval", "2", "--eval-iters", "1"));
        double reference = PipelineParityTest.validationLoss(five, SINGLE, 2);
        assertThat(PipelineParityTest.validationLoss(five, groups(3), 2)).isCloseTo(reference,
                within(1e-5 * Math.max(1, reference)));
    }

    @Test
    void sizesMegatronRefusesAreRefusedBeforeAnyRankStarts() {
        assertThatThrownBy(() -> TrajectoryParity.run(base(8), groups(9)))
                .hasMessageContaining("--microbatch-group-size-per-virtual-pipeline-stage 9 must lie in "
                        + "[pipeline size 2, micro-batches 8]");
        assertThatThrownBy(() -> TrajectoryParity.run(base(8), groups(1)))
                .hasMessageContaining("--microbatch-group-size-per-virtual-pipeline-stage 1 must lie in");
        assertThatThrownBy(() -> TrajectoryParity.run(base(7), groups(3)))
                .hasMessageContaining("interleaved schedule: 7 micro-batches in groups of 3 leave a last group of 1");
        assertThatThrownBy(() -> TrajectoryParity.run(base(8), PP2.with(Variant.of("g4",
                "--microbatch-group-size-per-virtual-pipeline-stage", "4"))))
                .hasMessageContaining("--microbatch-group-size-per-virtual-pipeline-stage 4 needs "
                        + "--virtual-pipeline-model-parallel-size");
    }
}
