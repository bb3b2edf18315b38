package org.djlmegatron.pretrain;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --save}/{@code --load} under context parallelism: CP ranks hold the same weights as
 * their data-parallel peers, and the distributed optimizer shards over data x context, so a
 * checkpoint is the DP one with data x context as its data-parallel size. With dropout on (its
 * masks are keyed by iteration and sample, so a resume draws the same ones).
 */
class ContextParallelResumeTest {

    @TempDir
    Path tmp;

    private static List<String> args(String... more) {
        List<String> a = new ArrayList<>(List.of("--mock-data", "--num-layers", "2", "--hidden-size", "32",
                "--num-attention-heads", "4", "--seq-length", "32", "--vocab-size", "128", "--micro-batch-size", "2",
                "--global-batch-size", "4", "--lr", "3e-3", "--lr-warmup-iters", "2", "--lr-decay-style", "cosine",
                "--lr-decay-iters", "20", "--hidden-dropout", "0.1", "--attention-dropout", "0.1", "--seed", "11"));
        a.addAll(List.of(more));
        return a;
    }

    private static final String[] CP2 = {"--nproc-per-node", "2", "--context-parallel-size", "2",
        "--use-distributed-optimizer"};

    @Test
    void fourPlusFourAtCp2EqualsEightStraight() {
        List<String> cp2 = args(CP2);
        List<StepResult> straight = run(cp2, "--train-iters", "8");
        Path ckpt = tmp.resolve("ckpt");
        run(cp2, "--train-iters", "4", "--save", ckpt.toString());
        List<StepResult> resumed = run(cp2, "--train-iters", "8", "--load", ckpt.toString());
        TrajectoryParity.assertIdentical(straight.subList(4, 8), resumed, "CP=2 resumed at iteration 4");
    }

    @Test
    void aCp2CheckpointResumesAtCp1AndAtCp2WithTwoDataRanks() {
        List<StepResult> straight = run(args(CP2), "--train-iters", "8");
        Path ckpt = tmp.resolve("ckpt");
        run(args(CP2), "--train-iters", "4", "--save", ckpt.toString());
        List<StepResult> one = run(args("--nproc-per-node", "1"), "--train-iters", "8", "--load", ckpt.toString());
        TrajectoryParity.assertClose(straight.subList(4, 8), one, 1e-5, "CP=2 checkpoint resumed at CP=1");
        List<StepResult> four = run(args("--nproc-per-node", "4", "--context-parallel-size", "2",
                "--use-distributed-optimizer"), "--train-iters", "8", "--load", ckpt.toString());
        TrajectoryParity.assertClose(straight.subList(4, 8), four, 1e-5, "CP=2 checkpoint resumed at CP=2 x DP=2");
    }

    private static List<StepResult> run(List<String> base, String... more) {
        List<String> a = new ArrayList<>(base);
        a.addAll(List.of(more));
        return TrajectoryParity.run(a, TrajectoryParity.Variant.of("as given"));
    }
}
