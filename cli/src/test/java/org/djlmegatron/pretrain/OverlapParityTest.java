package org.djlmegatron.pretrain;

import static org.djlmegatron.pretrain.TrajectoryParity.DP2_DISTOPT;

import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.djlmegatron.pretrain.TrajectoryParity.Variant;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * {@code --overlap-grad-reduce} (buckets all-reduced on the communication thread as the last
 * micro-batch's backward finishes them) and {@code --overlap-param-gather} (the distributed
 * optimizer's all-gather waited for at each parameter's first use in the next forward) give the
 * trajectory of the same layout without overlap, within 1e-6 over 10 fp32 iterations, with strict
 * sends: DP=2, DP=2 with the distributed optimizer, DP=2 x TP=2, DP=2 x TP=2 + SP with the
 * distributed optimizer; two micro-batches per rank, 1000-element buckets (many buckets, some
 * smaller than a parameter). The overlap works on the contiguous buffers: native library only.
 *
 * <p>ZeRO-3 ({@code optim_grads_params}: per-layer units, reduce-scattered during each
 * micro-batch's backward, the next unit gathered ahead) without overlap, with
 * {@code --overlap-grad-reduce} and with both flags gives the trajectory of no_shard without
 * overlap within 1e-6, at DP=2 (the llama fixture's units: the embedding, 2 layers, the final norm,
 * the output layer) and DP=2 x TP=2 + SP (partial layernorm gradients completed over TP on the shard).
 */
@Tag("native")
class OverlapParityTest {

    static final Variant DP2 = Variant.of("dp2", "--nproc-per-node", "2");
    static final Variant DP2_TP2 = Variant.of("dp2-tp2", "--nproc-per-node", "4", "--tensor-model-parallel-size", "2");
    static final Variant DP2_TP2_SP_DISTOPT = Variant.of("dp2-tp2-sp-distopt", "--nproc-per-node", "4",
            "--tensor-model-parallel-size", "2", "--sequence-parallel", "--use-distributed-optimizer");
    static final Variant GRAD = Variant.of("overlap-grad-reduce", "--overlap-grad-reduce");
    static final Variant GRAD_PARAM = Variant.of("overlap-grad-reduce+param-gather", "--overlap-grad-reduce",
            "--overlap-param-gather");

    static final Variant DP2_TP2_SP = Variant.of("dp2-tp2-sp", "--nproc-per-node", "4",
            "--tensor-model-parallel-size", "2", "--sequence-parallel");
    static final Variant ZERO3 = Variant.of("optim_grads_params", "--data-parallel-sharding-strategy", "optim_grads_params");

    static Stream<Arguments> cases() {
        return Stream.of(Arguments.of(DP2, GRAD), Arguments.of(DP2_DISTOPT, GRAD_PARAM),
                Arguments.of(DP2_TP2, GRAD), Arguments.of(DP2_TP2_SP_DISTOPT, GRAD_PARAM));
    }

    @ParameterizedTest(name = "{0} with {1}")
    @MethodSource("cases")
    void overlapGivesTheTrajectoryWithoutOverlap(Variant layout, Variant overlap) {
        List<String> base = base();
        List<StepResult> plain = TrajectoryParity.run(base, layout);
        List<StepResult> overlapped = TrajectoryParity.run(base, layout.with(overlap));
        TrajectoryParity.assertClose(plain, overlapped, 1e-6, layout + " with " + overlap + " vs without");
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("zero3Layouts")
    void zero3WithAndWithoutOverlapGivesTheNoShardTrajectory(Variant layout) {
        List<String> base = base();
        List<StepResult> noShard = TrajectoryParity.run(base, layout);
        for (Variant v : List.of(ZERO3, ZERO3.with(GRAD), ZERO3.with(GRAD_PARAM))) {
            TrajectoryParity.assertClose(noShard, TrajectoryParity.run(base, layout.with(v)), 1e-6,
                    layout + " " + v + " vs no_shard without overlap");
        }
    }

    /** 16-bit weights: ZeRO-3 overlaps the same per-unit fp32 reduce-scatters, so the bf16 trajectory is ZeRO-3's without overlap. */
    @org.junit.jupiter.api.Test
    void zero3WithOverlapGivesZero3sBf16Trajectory() {
        List<String> base = base();
        Variant bf16 = Variant.of("bf16", "--bf16").with(ZERO3);
        List<StepResult> plain = TrajectoryParity.run(base, DP2.with(bf16));
        TrajectoryParity.assertClose(plain, TrajectoryParity.run(base, DP2.with(bf16).with(GRAD_PARAM)), 1e-6,
                "dp2 bf16 optim_grads_params with both overlap flags vs without");
    }

    static Stream<Variant> zero3Layouts() {
        return Stream.of(DP2, DP2_TP2_SP);
    }

    private static List<String> base() {
        Path dir = PretrainRunner.fixtures().resolve("hf").resolve("llama");
        return TrajectoryParity.args("--init-hf", dir.toString(), "--mock-data", "--seq-length", "24",
                "--train-iters", "10", "--micro-batch-size", "1", "--global-batch-size", "4", "--ddp-bucket-size", "1000",
                "--lr", "1e-3", "--lr-decay-style", "constant", "--weight-decay", "0.1", "--clip-grad", "1.0",
                "--seed", "7");
    }
}
