package org.djlmegatron.pretrain;

import static org.djlmegatron.pretrain.TrajectoryParity.DP2_DISTOPT;
import static org.djlmegatron.pretrain.TrajectoryParity.SINGLE;

import java.nio.file.Path;
import java.util.List;
import java.util.function.Supplier;
import java.util.stream.Stream;
import org.djlmegatron.pretrain.TrajectoryParity.Variant;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The lean step over contiguous parameter/gradient buffers (native library) gives the trajectory
 * of the flat-vector step it replaces, within 1e-6 over 10 fp32 iterations (llama fixture's
 * weights, mock data), at DP=2 (bucketed all-reduce, with buckets smaller than a parameter), DP=2
 * with the distributed optimizer, DP=2 x TP=2 and DP=2 x TP=2 + SP with the distributed optimizer,
 * with one and with two micro-batches per rank; and every buffered layout gives the one-rank
 * flat-vector trajectory within 1e-6.
 */
@Tag("native")
class GradBufferParityTest {

    static final Variant DP2 = Variant.of("dp2", "--nproc-per-node", "2", "--ddp-bucket-size", "1000");
    static final Variant DP2_TP2 = Variant.of("dp2-tp2", "--nproc-per-node", "4", "--tensor-model-parallel-size", "2");
    static final Variant DP2_TP2_SP_DISTOPT = Variant.of("dp2-tp2-sp-distopt", "--nproc-per-node", "4",
            "--tensor-model-parallel-size", "2", "--sequence-parallel", "--use-distributed-optimizer");

    /** The one-rank flat-step reference per micro-batch size, run once. */
    private static final java.util.Map<Integer, List<StepResult>> ONE_RANK = new java.util.HashMap<>();

    static Stream<Arguments> cases() {
        return Stream.of(DP2, DP2_DISTOPT, DP2_TP2, DP2_TP2_SP_DISTOPT).flatMap(v -> Stream.of(Arguments.of(v, 2),
                Arguments.of(v, 1)));
    }

    @ParameterizedTest(name = "{0}, micro-batch size {1}")
    @MethodSource("cases")
    void buffersGiveTheFlatStepsTrajectory(Variant layout, int microBatchSize) {
        Path dir = PretrainRunner.fixtures().resolve("hf").resolve("llama");
        List<String> base = TrajectoryParity.args("--init-hf", dir.toString(), "--mock-data", "--seq-length", "24",
                "--train-iters", "10", "--micro-batch-size", "" + microBatchSize, "--global-batch-size", "4",
                "--lr", "1e-3", "--lr-decay-style", "constant", "--weight-decay", "0.1", "--clip-grad", "1.0",
                "--seed", "7");
        List<StepResult> flatSingle = ONE_RANK.computeIfAbsent(microBatchSize,
                k -> withBuffers(false, () -> TrajectoryParity.run(base, SINGLE)));
        List<StepResult> flat = withBuffers(false, () -> TrajectoryParity.run(base, layout));
        List<StepResult> buffered = withBuffers(true, () -> TrajectoryParity.run(base, layout));
        TrajectoryParity.assertClose(flat, buffered, 1e-6, layout + " buffers vs flat step");
        TrajectoryParity.assertClose(flatSingle, buffered, 1e-6, layout + " buffers vs one rank");
    }

    /** Runs {@code run} with the DistributedStep's buffer switch set, restoring it after. */
    private static <T> T withBuffers(boolean on, Supplier<T> run) {
        String key = "djlm.gradBuffers";
        String old = System.getProperty(key);
        System.setProperty(key, String.valueOf(on));
        try {
            return run.get();
        } finally {
            if (old == null) {
                System.clearProperty(key);
            } else {
                System.setProperty(key, old);
            }
        }
    }
}
