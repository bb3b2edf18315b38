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
 * smaller than a parameter); under pipelining and expert parallelism. The overlap works on the
 * contiguous buffers: native library only.
 *
 * <p>ZeRO-2 ({@code optim_grads}) with overlap, each micro-batch's buckets reduced to their owners
 * during its own backward, against no_shard without overlap: DP=2 (the llama fixture has 151,872
 * parameters, so each rank's slice is 75,936 elements, some 76 buckets of 1000, and the bucket
 * [75,872, 76,872) crosses the slices' boundary), DP=2 x TP=2 and DP=2 x TP=2 + SP.
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

    static final Variant ZERO2 = Variant.of("optim_grads", "--data-parallel-sharding-strategy", "optim_grads");
    static final Variant NO_SHARD = Variant.of("no_shard", "--data-parallel-sharding-strategy", "no_shard");
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

    static final Variant PP2_DP2 = Variant.of("pp2-dp2", "--nproc-per-node", "4", "--pipeline-model-parallel-size", "2");
    static final Variant PP2_VP2_DP2_DISTOPT = Variant.of("pp2-vp2-dp2-distopt", "--nproc-per-node", "4",
            "--pipeline-model-parallel-size", "2", "--virtual-pipeline-model-parallel-size", "2",
            "--use-distributed-optimizer");

    static Stream<Arguments> pipelineCases() {
        return Stream.of(Arguments.of(PP2_DP2, GRAD, true), Arguments.of(PP2_DP2, GRAD, false),
                Arguments.of(PP2_VP2_DP2_DISTOPT, GRAD_PARAM, true), Arguments.of(PP2_VP2_DP2_DISTOPT, GRAD_PARAM, false));
    }

    /**
     * Under pipelining each model chunk's buckets start in that chunk's last micro-batch's backward
     * (which the 1F1B schedule interleaves with other chunks' backwards of earlier micro-batches);
     * the tied embedding's exchange between the first and the last stage follows the reduction.
     * PP=2 x DP=2 and PP=2 x VP=2 x DP=2 with the distributed optimizer, tied and untied, four
     * micro-batches per rank, 500-element buckets (buckets spanning two chunks).
     */
    @ParameterizedTest(name = "{0} with {1}, tied {2}")
    @MethodSource("pipelineCases")
    void overlapUnderPipeliningGivesTheTrajectoryWithoutOverlap(Variant layout, Variant overlap, boolean tied) {
        List<String> base = TrajectoryParity.args("--mock-data", "--num-layers", "4", "--hidden-size", "32",
                "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128", "--micro-batch-size", "1",
                "--global-batch-size", "8", "--train-iters", "10", "--lr", "3e-3", "--lr-decay-style", "constant",
                "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", "11", "--ddp-bucket-size", "500");
        if (!tied) {
            base.add("--untie-embeddings-and-output-weights");
        }
        List<StepResult> plain = TrajectoryParity.run(base, layout);
        List<StepResult> overlapped = TrajectoryParity.run(base, layout.with(overlap));
        TrajectoryParity.assertClose(plain, overlapped, 1e-6, layout + " with " + overlap + " tied " + tied);
    }

    static final Variant EP2_DP4 = Variant.of("ep2-dp4", "--nproc-per-node", "4", "--expert-model-parallel-size", "2");
    static final Variant EP2_DP4_DISTOPT = EP2_DP4.with(Variant.of("distopt", "--use-distributed-optimizer"));

    static Stream<Arguments> expertLayouts() {
        return Stream.of(Arguments.of(EP2_DP4, GRAD), Arguments.of(EP2_DP4_DISTOPT, GRAD_PARAM),
                Arguments.of(TrajectoryParity.EP2_PP2, GRAD));
    }

    /**
     * Under expert parallelism the dense buffer's buckets are all-reduced over data x context
     * parallelism and the expert buffer's over the expert-data group, each on a communication
     * thread of its own, both divided by the whole DP size; under the distributed optimizer both
     * parts' updated shards are all-gathered there too, each waited for at its first use. The
     * mixtral fixture with its balancing losses: EP=2 over DP=4 (expert-data 2), the same with the
     * distributed optimizer and the parameter gather, and EP=2 x PP=2.
     */
    @ParameterizedTest(name = "{0} with {1}")
    @MethodSource("expertLayouts")
    void overlapUnderExpertParallelismGivesTheTrajectoryWithoutOverlap(Variant layout, Variant overlap) {
        List<String> base = moeBase();
        List<StepResult> plain = TrajectoryParity.run(base, layout);
        List<StepResult> overlapped = TrajectoryParity.run(base, layout.with(overlap));
        TrajectoryParity.assertClose(plain, overlapped, 1e-6, layout + " with " + overlap + " vs without");
    }

    static Stream<Arguments> expertZero2Cases() {
        Variant ep2 = Overlap16BitParityTest.EP2;
        Variant ep2tp2sp = Overlap16BitParityTest.EP2_TP2_SP;
        return Stream.of(Arguments.of("", EP2_DP4, GRAD), Arguments.of("", EP2_DP4, GRAD_PARAM),
                Arguments.of("", ep2, GRAD_PARAM), Arguments.of("--bf16", EP2_DP4, GRAD_PARAM),
                Arguments.of("--bf16", ep2tp2sp, GRAD));
    }

    /**
     * ZeRO-2 ({@code optim_grads}) under expert parallelism: each micro-batch's dense buckets are
     * reduced to their owners over data x context parallelism and its expert buckets over the
     * expert-data group during its own backward, each lane into its own gradient shard (16-bit
     * pieces widened first and added by their owners; the partial gradients completed over TP on
     * the fp32 shards once per step). fp32 at EP=2 over DP=4 with each flag set and at EP=2 (world
     * 2), bf16 at EP=2 over DP=4 and EP=2 x TP=2 + SP: bit-identical to ZeRO-2 without overlap.
     */
    @ParameterizedTest(name = "{1} optim_grads {0} with {2}")
    @MethodSource("expertZero2Cases")
    void zero2UnderExpertParallelismWithOverlapGivesTheTrajectoryWithoutBitForBit(String dtype, Variant layout,
            Variant overlap) {
        Overlap16BitParityTest.assertIdenticalWithAndWithout(Overlap16BitParityTest.expertBase(dtype), dtype,
                layout.with(ZERO2), overlap);
    }

    static final Variant EP2_DP2 = Variant.of("ep2-dp2", "--nproc-per-node", "2", "--expert-model-parallel-size", "2");

    /**
     * ZeRO-3 under expert parallelism: with {@code --overlap-grad-reduce} each unit's reduce-scatter
     * (dense units over data x context parallelism, expert units over the expert-data group, on one
     * communication thread in unit order) starts during backward, with {@code --overlap-param-gather}
     * the next unit's all-gather runs ahead; the same collectives on the same data, so the
     * trajectory is bit for bit ZeRO-3's without overlap on the same layout. The mixtral fixture:
     * EP=2 on 2 ranks (expert-data 1) and over DP=4 (expert-data 2), there with bf16 weights too.
     */
    @ParameterizedTest(name = "{0}")
    @MethodSource("zero3ExpertLayouts")
    void zero3UnderExpertParallelismWithOverlapGivesItsTrajectoryWithout(Variant layout) {
        List<String> base = moeBase();
        List<StepResult> plain = TrajectoryParity.run(base, layout.with(ZERO3));
        for (Variant overlap : List.of(GRAD, GRAD_PARAM)) {
            TrajectoryParity.assertIdentical(plain, TrajectoryParity.run(base, layout.with(ZERO3).with(overlap)),
                    layout + " optim_grads_params with " + overlap + " vs without");
        }
    }

    static Stream<Variant> zero3ExpertLayouts() {
        return Stream.of(EP2_DP2, EP2_DP4, EP2_DP4.with(Variant.of("bf16", "--bf16")));
    }

    /** The mixtral fixture with its balancing losses, 10 fp32 iterations, 8 micro-batches of one sample per step. */
    private static List<String> moeBase() {
        Path dir = PretrainRunner.fixtures().resolve("hf").resolve("mixtral");
        return TrajectoryParity.args("--init-hf", dir.toString(), "--mock-data", "--seq-length", "24",
                "--train-iters", "10", "--micro-batch-size", "1", "--global-batch-size", "8", "--lr", "1e-3",
                "--lr-decay-style", "constant", "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", "7",
                "--moe-router-load-balancing-type", "aux_loss", "--moe-aux-loss-coeff", "0.01", "--ddp-bucket-size", "2000");
    }

    static final Variant OPTIM = Variant.of("optim", "--data-parallel-sharding-strategy", "optim");

    /** The matrix: each sharded strategy with overlap at DP2 and DP2 x TP2 (and + SP) against no_shard without. */
    static Stream<Arguments> shardedCases() {
        return Stream.of(Arguments.of(OPTIM, DP2, GRAD), Arguments.of(OPTIM, DP2, GRAD_PARAM),
                Arguments.of(OPTIM, DP2_TP2, GRAD_PARAM),
                Arguments.of(ZERO2, DP2, GRAD), Arguments.of(ZERO2, DP2, GRAD_PARAM), Arguments.of(ZERO2, DP2_TP2, GRAD),
                Arguments.of(ZERO2, DP2_TP2, GRAD_PARAM), Arguments.of(ZERO2, DP2_TP2_SP, GRAD),
                Arguments.of(ZERO2, DP2_TP2_SP, GRAD_PARAM));
    }

    @ParameterizedTest(name = "{1} {0} with {2}")
    @MethodSource("shardedCases")
    void shardedStrategyWithOverlapGivesTheNoShardTrajectory(Variant strategy, Variant layout, Variant overlap) {
        List<String> base = base();
        List<StepResult> noShard = TrajectoryParity.run(base, layout.with(NO_SHARD));
        List<StepResult> overlapped = TrajectoryParity.run(base, layout.with(strategy).with(overlap));
        TrajectoryParity.assertClose(noShard, overlapped, 1e-6, layout + " " + strategy + " with " + overlap
                + " vs no_shard without");
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
        return Stream.of(DP2, DP2_TP2, DP2_TP2_SP);
    }

    private static List<String> base() {
        Path dir = PretrainRunner.fixtures().resolve("hf").resolve("llama");
        return TrajectoryParity.args("--init-hf", dir.toString(), "--mock-data", "--seq-length", "24",
                "--train-iters", "10", "--micro-batch-size", "1", "--global-batch-size", "4", "--ddp-bucket-size", "1000",
                "--lr", "1e-3", "--lr-decay-style", "constant", "--weight-decay", "0.1", "--clip-grad", "1.0",
                "--seed", "7");
    }
}
