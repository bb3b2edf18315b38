package org.djlmegatron.pretrain;

import java.nio.file.Path;
import java.util.List;
import org.djlmegatron.pretrain.TrajectoryParity.Variant;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * 16-bit weights over the buffers complete the tensor-parallel partial gradients (the
 * sequence-parallel norms' weights) once per step on the fp32 main gradient, after the
 * data-parallel reduction (Megatron's order): DP=2 x TP=2 + SP follows DP=2 at TP=1 within 1e-5,
 * no_shard, the distributed optimizer (whose reduced shard is completed in the main gradient) and
 * ZeRO-2 (completed on its fp32 gradient shard).
 * fp16 with a static loss scale, whose layers compute in fp32: measured gaps up to 2.8e-6 (norm),
 * while leaving the completion out gives 5.4e-5 from the first step; PP=2 x TP=2 + SP follows
 * one rank the same way. bf16 takes the same path, but
 * its TP=2 vs TP=1 rounding (1e-3) hides a missing completion there.
 */
@Tag("native")
class SixteenBitTensorParallelTest {

    @Test
    void tensorParallelWithSequenceParallelFollowsOneTensorRank() {
        List<String> base = base("--ddp-bucket-size", "1000");
        List<StepResult> dp2 = TrajectoryParity.run(base, Variant.of("dp2", "--nproc-per-node", "2"));
        Variant tp2 = Variant.of("dp2-tp2-sp", "--nproc-per-node", "4", "--tensor-model-parallel-size", "2",
                "--sequence-parallel");
        TrajectoryParity.assertClose(dp2, TrajectoryParity.run(base, tp2), 1e-5, "fp16 " + tp2 + " vs dp2");
        Variant distopt = tp2.with(TrajectoryParity.DISTOPT);
        TrajectoryParity.assertClose(dp2, TrajectoryParity.run(base, distopt), 1e-5, "fp16 " + distopt + " vs dp2");
        // ZeRO-2: completed once per step on the fp32 gradient shard, after the per-micro-batch reduce-scatters
        Variant zero2 = tp2.with(Variant.of("optim_grads", "--data-parallel-sharding-strategy", "optim_grads"));
        TrajectoryParity.assertClose(dp2, TrajectoryParity.run(base, zero2), 1e-5, "fp16 " + zero2 + " vs dp2");
    }

    /** Under pipelining the same order (micro-batches into main in the schedule, DP, then TP): PP=2 x TP=2 + SP follows one rank. */
    @Test
    void pipelineWithTensorParallelFollowsOneRank() {
        List<String> base = base();
        List<StepResult> single = TrajectoryParity.run(base, TrajectoryParity.SINGLE);
        Variant v = TrajectoryParity.PP2_TP2_SP;
        TrajectoryParity.assertClose(single, TrajectoryParity.run(base, v), 1e-5, "fp16 " + v + " vs one rank");
    }

    /** The llama fixture, fp16 with a static loss scale, no dropout, six iterations; {@code more} appended. */
    private static List<String> base(String... more) {
        Path dir = PretrainRunner.fixtures().resolve("hf").resolve("llama");
        List<String> args = TrajectoryParity.args("--init-hf", dir.toString(), "--mock-data", "--seq-length", "24",
                "--train-iters", "6", "--micro-batch-size", "1", "--global-batch-size", "4", "--lr", "1e-3",
                "--lr-decay-style", "constant", "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", "7",
                "--hidden-dropout", "0", "--attention-dropout", "0", "--fp16", "--loss-scale", "1024");
        args.addAll(List.of(more));
        return args;
    }
}
