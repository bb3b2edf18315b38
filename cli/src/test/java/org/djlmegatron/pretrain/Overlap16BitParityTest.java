package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;

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
 * {@code --overlap-grad-reduce} (and {@code --overlap-param-gather} under the distributed
 * optimizer) with 16-bit weights: the last micro-batch's bf16/fp16 gradients are added into the
 * fp32 main gradient bucket by bucket on the communication thread, then reduced; the tensor-parallel
 * completion follows on the fp32 main gradient. The arithmetic is the step's without overlap, so
 * the trajectory is bit-identical to it (10 iterations, strict sends, two micro-batches per rank,
 * 1000-element buckets), at DP=2 and DP=2 x TP=2 + SP, no_shard, optim and optim_grads (ZeRO-2:
 * each bucket of each micro-batch widened, reduced to its owner in fp32 and added into its shard
 * during the backward; TP completion on the shard once per step). fp16 runs with the
 * dynamic loss scaler from 2^21: some steps overflow and are skipped, in both runs alike
 * (checked), so the overflow path goes through the overlap too, and the others train.
 */
@Tag("native")
class Overlap16BitParityTest {

    static final Variant DP2 = Variant.of("dp2", "--nproc-per-node", "2");
    static final Variant DP2_DISTOPT = TrajectoryParity.DP2_DISTOPT;
    static final Variant DP2_TP2_SP = Variant.of("dp2-tp2-sp", "--nproc-per-node", "4",
            "--tensor-model-parallel-size", "2", "--sequence-parallel");
    static final Variant DP2_TP2_SP_DISTOPT = Variant.of("dp2-tp2-sp-distopt", "--nproc-per-node", "4",
            "--tensor-model-parallel-size", "2", "--sequence-parallel", "--use-distributed-optimizer");
    static final Variant GRAD = OverlapParityTest.GRAD;
    static final Variant GRAD_PARAM = OverlapParityTest.GRAD_PARAM;

    static final Variant PP2_DP2 = OverlapParityTest.PP2_DP2;
    static final Variant PP2_VP2_DP2_DISTOPT = OverlapParityTest.PP2_VP2_DP2_DISTOPT;

    static Stream<Arguments> pipelineCases() {
        return Stream.of(Arguments.of(PP2_DP2, GRAD), Arguments.of(PP2_VP2_DP2_DISTOPT, GRAD_PARAM));
    }

    /**
     * Under pipelining, bf16: each backward's gradients are widened into the fp32 main gradient over
     * its model chunk's range only, except the chunk's last, whose buckets add their own on the
     * communication thread (chunks interleave: another chunk's buckets may be in flight meanwhile).
     * PP=2 x DP=2 (tied embedding) and PP=2 x VP=2 x DP=2 with the distributed optimizer (untied),
     * four micro-batches per rank, 500-element buckets: bit-identical to the run without overlap.
     */
    @ParameterizedTest(name = "bf16 {0} with {1}")
    @MethodSource("pipelineCases")
    void underPipeliningOverlapGivesTheTrajectoryWithoutOverlapBitForBit(Variant layout, Variant overlap) {
        List<String> base = TrajectoryParity.args("--mock-data", "--num-layers", "4", "--hidden-size", "32",
                "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128", "--micro-batch-size", "1",
                "--global-batch-size", "8", "--train-iters", "10", "--lr", "3e-3", "--lr-decay-style", "constant",
                "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", "11", "--ddp-bucket-size", "500", "--bf16");
        if (layout == PP2_VP2_DP2_DISTOPT) {
            base.add("--untie-embeddings-and-output-weights");
        }
        List<StepResult> plain = TrajectoryParity.run(base, layout);
        TrajectoryParity.assertIdentical(plain, TrajectoryParity.run(base, layout.with(overlap)),
                "bf16 " + layout + " with " + overlap + " vs without");
    }

    static final Variant DP2_ZERO2 = DP2.with(OverlapParityTest.ZERO2);
    static final Variant DP2_TP2_SP_ZERO2 = DP2_TP2_SP.with(OverlapParityTest.ZERO2);

    static Stream<Arguments> cases() {
        return Stream.of("--bf16", "--fp16").flatMap(dtype -> Stream.of(
                Arguments.of(dtype, DP2, GRAD), Arguments.of(dtype, DP2_DISTOPT, GRAD_PARAM),
                Arguments.of(dtype, DP2_TP2_SP, GRAD), Arguments.of(dtype, DP2_TP2_SP_DISTOPT, GRAD_PARAM),
                Arguments.of(dtype, DP2_ZERO2, GRAD_PARAM), Arguments.of(dtype, DP2_TP2_SP_ZERO2, GRAD)));
    }

    @ParameterizedTest(name = "{0} {1} with {2}")
    @MethodSource("cases")
    void overlapGivesTheTrajectoryWithoutOverlapBitForBit(String dtype, Variant layout, Variant overlap) {
        Path dir = PretrainRunner.fixtures().resolve("hf").resolve("llama");
        List<String> base = TrajectoryParity.args("--init-hf", dir.toString(), "--mock-data", "--seq-length", "24",
                "--train-iters", "10", "--micro-batch-size", "1", "--global-batch-size", "4", "--ddp-bucket-size", "1000",
                "--lr", "1e-3", "--lr-decay-style", "constant", "--weight-decay", "0.1", "--clip-grad", "1.0",
                "--seed", "7", dtype);
        assertIdenticalWithAndWithout(base, dtype, layout, overlap);
    }

    static final Variant EP2 = Variant.of("ep2", "--nproc-per-node", "2", "--expert-model-parallel-size", "2");
    static final Variant EP2_DISTOPT = EP2.with(TrajectoryParity.DISTOPT);
    static final Variant EP2_DP4 = OverlapParityTest.EP2_DP4;
    static final Variant EP2_DP4_DISTOPT = OverlapParityTest.EP2_DP4_DISTOPT;
    static final Variant EP2_TP2_SP = Variant.of("ep2-tp2-sp", "--nproc-per-node", "4", "--expert-model-parallel-size",
            "2", "--tensor-model-parallel-size", "2", "--sequence-parallel");

    static Stream<Arguments> expertCases() {
        return Stream.of(Arguments.of("--bf16", EP2, GRAD), Arguments.of("--bf16", EP2_DISTOPT, GRAD_PARAM),
                Arguments.of("--bf16", EP2_DP4, GRAD), Arguments.of("--bf16", EP2_DP4_DISTOPT, GRAD_PARAM),
                Arguments.of("--bf16", EP2_TP2_SP, GRAD), Arguments.of("--bf16", TrajectoryParity.EP2_PP2, GRAD),
                Arguments.of("--fp16", EP2_DP4, GRAD),
                Arguments.of("--fp16", EP2_DP4_DISTOPT, GRAD_PARAM));
    }

    /**
     * Under expert parallelism (the mixtral fixture with its balancing losses): the dense buffer's
     * buckets over data x context parallelism and the expert buffer's over the expert-data group,
     * each on its own communication thread, each last-backward bucket widening its own 16-bit
     * gradients first; the tensor-parallel completion on both fp32 main gradients after all
     * buckets. EP=2 (world 2: expert-data 1) and EP=2 over DP=4 (expert-data 2), with and without
     * the distributed optimizer and the parameter gather, EP=2 x TP=2 + SP, and EP=2 x PP=2 (each
     * earlier backward widened over its chunk's range of both buffers): bit-identical.
     */
    @ParameterizedTest(name = "{0} {1} with {2}")
    @MethodSource("expertCases")
    void underExpertParallelismOverlapGivesTheTrajectoryWithoutOverlapBitForBit(String dtype, Variant layout,
            Variant overlap) {
        assertIdenticalWithAndWithout(expertBase(dtype), dtype, layout, overlap);
    }

    /** The mixtral fixture, two micro-batches per rank at DP 4 (four at DP 2), 2000-element buckets; {@code more} appended. */
    static List<String> expertBase(String... more) {
        Path dir = PretrainRunner.fixtures().resolve("hf").resolve("mixtral");
        return TrajectoryParity.args("--init-hf", dir.toString(), "--mock-data", "--seq-length", "24",
                "--train-iters", "10", "--micro-batch-size", "1", "--global-batch-size", "8", "--lr", "1e-3",
                "--lr-decay-style", "constant", "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", "7",
                "--moe-router-load-balancing-type", "aux_loss", "--moe-aux-loss-coeff", "0.01", "--ddp-bucket-size", "2000",
                String.join(" ", more)).stream().filter(a -> !a.isEmpty()).collect(java.util.stream.Collectors.toList());
    }

    /**
     * {@code base} on {@code layout} with and without {@code overlap}: every step's loss, norm and
     * skip identical; fp16 starts at a loss scale of 2^21 so that some steps overflow, not all.
     */
    static void assertIdenticalWithAndWithout(List<String> base, String dtype, Variant layout, Variant overlap) {
        base = new java.util.ArrayList<>(base);
        if (dtype.equals("--fp16")) {
            base.addAll(List.of("--initial-loss-scale", "2097152")); // 2^21: the first steps overflow, the rest train
        }
        List<StepResult> plain = TrajectoryParity.run(base, layout);
        List<StepResult> overlapped = TrajectoryParity.run(base, layout.with(overlap));
        String what = dtype + " " + layout + " with " + overlap + " vs without";
        TrajectoryParity.assertIdentical(plain, overlapped, what);
        long skipped = plain.stream().filter(StepResult::skipped).count();
        for (int i = 0; i < plain.size(); i++) {
            assertThat(overlapped.get(i).skipped()).as("%s: step %d skipped", what, i + 1)
                    .isEqualTo(plain.get(i).skipped());
        }
        if (dtype.equals("--fp16")) {
            assertThat(skipped).as("%s: an initial loss scale of 2^21 overflows some steps, not all", what)
                    .isPositive().isLessThan(plain.size());
        } else {
            assertThat(skipped).as("%s: bf16 skips nothing", what).isZero();
        }
    }
}
