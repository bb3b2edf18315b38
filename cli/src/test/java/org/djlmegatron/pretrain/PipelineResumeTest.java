package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --save}/{@code --load} at PP=2: Megatron's per-stage directories
 * ({@code mp_rank_TT_PPP}), and a resume that continues the straight run bit for bit (weights,
 * the tied embedding's two copies, the optimizer state of every stage, the data position).
 */
class PipelineResumeTest {

    @TempDir
    Path tmp;

    private static List<String> args(String... more) {
        List<String> a = TrajectoryParity.args("--mock-data", "--num-layers", "4", "--hidden-size", "32",
                "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128", "--micro-batch-size", "1",
                "--global-batch-size", "4", "--lr", "3e-3", "--lr-warmup-iters", "2", "--lr-decay-style", "cosine",
                "--lr-decay-iters", "10", "--weight-decay", "0.1", "--seed", "11");
        a.addAll(List.of(more));
        return a;
    }

    private static final TrajectoryParity.Variant PP2_TP2 = TrajectoryParity.Variant.of("pp2-tp2", "--nproc-per-node", "4",
            "--pipeline-model-parallel-size", "2", "--tensor-model-parallel-size", "2");

    @Test
    void threePlusThreeAtPp2EqualsSixStraight() {
        for (TrajectoryParity.Variant v : new TrajectoryParity.Variant[] {TrajectoryParity.PP2, PP2_TP2}) {
            List<StepResult> straight = TrajectoryParity.run(args("--train-iters", "6"), v);
            Path ckpt = tmp.resolve("ckpt-" + v.name());
            TrajectoryParity.run(args("--train-iters", "3", "--save", ckpt.toString()), v);
            assertThat(ckpt.resolve("iter_0000003").resolve(v == PP2_TP2 ? "mp_rank_01_001" : "mp_rank_00_001")
                    .resolve("model.safetensors")).isRegularFile();
            List<StepResult> resumed = TrajectoryParity.run(args("--train-iters", "6", "--load", ckpt.toString()), v);
            assertThat(resumed).extracting(StepResult::iteration).containsExactly(4L, 5L, 6L);
            TrajectoryParity.assertIdentical(straight.subList(3, 6), resumed, v + " resumed");
        }
    }

    @Test
    void anotherPipelineLayoutLoadsTheWeightsButRefusesToGuessTheOptimizerState() {
        Path ckpt = tmp.resolve("ckpt");
        TrajectoryParity.run(args("--train-iters", "2", "--save", ckpt.toString()), TrajectoryParity.PP2);
        List<StepResult> straight = TrajectoryParity.run(args("--train-iters", "3"), TrajectoryParity.SINGLE);
        assertThatThrownBy(() -> TrajectoryParity.run(args("--train-iters", "3", "--load", ckpt.toString()),
                TrajectoryParity.SINGLE))
                .isInstanceOf(CheckpointException.class)
                .hasMessageContaining("saved at TP 1 x PP 2 x DP 1, resumed at TP 1 x PP 1 x DP 1")
                .hasMessageContaining("--no-load-optim");
        // the weights alone load at any layout: one rank continues from the two stages' weights
        List<StepResult> single = TrajectoryParity.run(args("--train-iters", "3", "--load", ckpt.toString(),
                "--no-load-optim"), TrajectoryParity.SINGLE);
        List<StepResult> pp4 = TrajectoryParity.run(args("--train-iters", "3", "--load", ckpt.toString(),
                "--no-load-optim"), TrajectoryParity.PP4);
        assertThat(single).extracting(StepResult::iteration).containsExactly(3L);
        TrajectoryParity.assertClose(single, pp4, 1e-5, "pp4 from the pp2 weights");
        // a step's loss is computed before its update: the weights after two steps give the straight run's third loss
        assertThat(Math.abs(single.get(0).loss() - straight.get(2).loss())).isLessThan(1e-5);
    }

    @Test
    void savingUnevenOrVirtualStagesIsRefusedBeforeAnyWork() {
        List<String> a = new ArrayList<>(args("--train-iters", "1", "--save", tmp.resolve("x").toString()));
        assertThatThrownBy(() -> TrajectoryParity.run(a, TrajectoryParity.PP2_VP2))
                .hasMessageContaining("--save with --virtual-pipeline-model-parallel-size 2 is not supported yet");
    }
}
