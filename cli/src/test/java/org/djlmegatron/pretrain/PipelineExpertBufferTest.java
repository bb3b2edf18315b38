package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;
import static org.djlmegatron.pretrain.TrajectoryParity.DISTOPT;
import static org.djlmegatron.pretrain.TrajectoryParity.EP2;
import static org.djlmegatron.pretrain.TrajectoryParity.EP2_PP2;
import static org.djlmegatron.pretrain.TrajectoryParity.PP2;
import static org.djlmegatron.pretrain.TrajectoryParity.PP2_DP2_DISTOPT;
import static org.djlmegatron.pretrain.TrajectoryParity.PP2_VP2;
import static org.djlmegatron.pretrain.TrajectoryParity.SINGLE;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.djlmegatron.pretrain.TrajectoryParity.Variant;
import org.djlmegatron.training.StepResult;
import org.djlmegatron.training.buffers.RankMemory;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The contiguous parameter/gradient buffers under pipeline and expert parallelism (native
 * library): one buffer over all of a pipeline rank's model chunks, and under expert parallelism a
 * dense buffer (reduced over data x context parallelism) beside an expert buffer (reduced over the
 * expert-data group). Over 5 fp32 iterations they give the flat-vector step's trajectory within
 * 1e-6 at PP=2 (tied embeddings: the embedding group's exchange on the buffer), PP=2 x VP=2,
 * PP=2 x DP=2 with the distributed optimizer, EP=2 (with and without the distributed optimizer) and
 * EP=2 x PP=2, and the one-rank trajectory within 1e-5 as the flat step does; with bf16 weights
 * under PP=2 the micro-batches accumulate in fp32; checkpoints cross between the two steps.
 */
@Tag("native")
class PipelineExpertBufferTest {

    @TempDir
    Path tmp;

    private static List<String> dense(int iters, int globalBatch) {
        return TrajectoryParity.args("--mock-data", "--num-layers", "4", "--hidden-size", "32", "--num-attention-heads",
                "4", "--seq-length", "16", "--vocab-size", "128", "--micro-batch-size", "1", "--global-batch-size",
                "" + globalBatch, "--train-iters", "" + iters, "--lr", "3e-3", "--lr-decay-style", "constant",
                "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", "11");
    }

    private static List<String> moe(int iters) {
        Path dir = PretrainRunner.fixtures().resolve("hf").resolve("mixtral");
        return TrajectoryParity.args("--init-hf", dir.toString(), "--mock-data", "--seq-length", "24",
                "--train-iters", "" + iters, "--micro-batch-size", "1", "--global-batch-size", "4", "--lr", "1e-3",
                "--lr-decay-style", "constant", "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", "7",
                "--moe-router-load-balancing-type", "aux_loss", "--moe-aux-loss-coeff", "0.01");
    }

    /** A mock MoE model (4 experts, top-2, shared expert), two layers: one per stage at PP=2. */
    private static List<String> mockMoe(int iters) {
        return TrajectoryParity.args("--mock-data", "--num-layers", "2", "--hidden-size", "32",
                "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128", "--swiglu",
                "--normalization", "RMSNorm", "--position-embedding-type", "rope", "--disable-bias-linear",
                "--num-experts", "4", "--moe-router-topk", "2", "--moe-ffn-hidden-size", "16",
                "--moe-shared-expert-intermediate-size", "24", "--moe-aux-loss-coeff", "0.01",
                "--micro-batch-size", "1", "--global-batch-size", "4", "--train-iters", "" + iters, "--lr", "3e-3",
                "--lr-decay-style", "constant", "--weight-decay", "0.1", "--seed", "11");
    }

    /** Buffered vs flat on the same layout (1e-6), and buffered vs the one-rank flat run (1e-5, as the flat step). */
    private static void assertBuffersFollow(List<String> base, Variant v) {
        List<StepResult> single = TrajectoryParity.onFlatStep(() -> TrajectoryParity.run(base, SINGLE));
        List<StepResult> flat = TrajectoryParity.onFlatStep(() -> TrajectoryParity.run(base, v));
        List<StepResult> buffered = TrajectoryParity.run(base, v);
        TrajectoryParity.assertClose(flat, buffered, 1e-6, v + " buffers vs flat step");
        TrajectoryParity.assertClose(single, buffered, 1e-5, v + " buffers vs one rank");
    }

    @Test
    void pipelineBuffersFollowTheFlatStep() {
        List<String> tied = dense(5, 4);
        for (Variant v : new Variant[] {PP2, PP2_DP2_DISTOPT}) {
            assertBuffersFollow(tied, v);
        }
        List<String> untied = dense(5, 4);
        untied.add("--untie-embeddings-and-output-weights");
        assertBuffersFollow(untied, PP2_VP2);
    }

    @Test
    void expertBuffersFollowTheFlatStep() {
        List<String> base = moe(5);
        for (Variant v : new Variant[] {EP2, EP2.with(DISTOPT), EP2_PP2}) {
            assertBuffersFollow(base, v);
        }
    }

    /**
     * ZeRO-2 under PP=2 x DP=2 (untied embeddings; PP=2 x VP=2 x DP=2 too): each backward pass's
     * gradients are reduce-scattered into this rank's fp32 shard inside the 1F1B schedule, and the
     * run follows the unsharded buffered run within 1e-6 (fp32, 5 iterations, 4 micro-batches per
     * rank) and the one-rank run within 1e-5.
     */
    @Test
    void zero2UnderPipelineFollowsTheUnshardedRun() {
        List<String> base = dense(5, 8);
        base.add("--untie-embeddings-and-output-weights");
        List<StepResult> single = TrajectoryParity.run(base, SINGLE);
        Variant pp2dp2 = Variant.of("pp2-dp2", "--nproc-per-node", "4", "--pipeline-model-parallel-size", "2");
        Variant zero2 = Variant.of("zero2", "--data-parallel-sharding-strategy", "optim_grads");
        for (Variant v : new Variant[] {pp2dp2, pp2dp2.with(Variant.of("vp2", "--virtual-pipeline-model-parallel-size",
                "2"))}) {
            List<StepResult> unsharded = TrajectoryParity.run(base, v);
            List<StepResult> sharded = TrajectoryParity.run(base, v.with(zero2));
            TrajectoryParity.assertClose(unsharded, sharded, 1e-6, v + " optim_grads vs no_shard");
            TrajectoryParity.assertClose(single, sharded, 1e-5, v + " optim_grads vs one rank");
        }
    }

    /**
     * ZeRO-2 under PP=2 x DP=2 with the tied embedding: the first and the last stage place it at
     * different offsets of their buffers, so each stage assembles its data-parallel sum from the
     * ranks' slices before the embedding group adds the two ({@link
     * org.djlmegatron.training.buffers.GradientShard#reduceAcrossStages}). Follows the distributed
     * optimizer's run within 1e-6 (the two stages' parts are added after the data-parallel sum
     * instead of before it) and the one-rank run within 1e-5; PP=2 x VP=2 x DP=2 too.
     */
    @Test
    void zero2UnderPipelineWithTheTiedEmbeddingFollowsTheDistributedOptimizer() {
        List<String> base = dense(5, 8);
        List<StepResult> single = TrajectoryParity.run(base, SINGLE);
        Variant pp2dp2 = Variant.of("pp2-dp2", "--nproc-per-node", "4", "--pipeline-model-parallel-size", "2");
        Variant zero2 = Variant.of("zero2", "--data-parallel-sharding-strategy", "optim_grads");
        for (Variant v : new Variant[] {pp2dp2, pp2dp2.with(Variant.of("vp2", "--virtual-pipeline-model-parallel-size",
                "2"))}) {
            List<StepResult> sharded = TrajectoryParity.run(base, v.with(zero2));
            TrajectoryParity.assertClose(TrajectoryParity.run(base, v.with(DISTOPT)), sharded, 1e-6,
                    v + " tied optim_grads vs optim");
            TrajectoryParity.assertClose(single, sharded, 1e-5, v + " tied optim_grads vs one rank");
        }
    }

    /**
     * ZeRO-2 under expert parallelism: the dense gradients reduce-scattered over data x context
     * parallelism and the expert gradients over the expert-data group into two fp32 shards, per
     * micro-batch. EP=2 (world 2 and world 4, where the expert-data group has 2 ranks) and
     * EP=2 x PP=2 (untied) follow the distributed optimizer's run without gradient shards within 1e-6.
     */
    @Test
    void zero2UnderExpertsFollowsTheDistributedOptimizer() {
        List<String> base = TrajectoryParity.replace(mockMoe(5), "--global-batch-size", "8");
        base.add("--untie-embeddings-and-output-weights");
        Variant zero2 = Variant.of("zero2", "--data-parallel-sharding-strategy", "optim_grads");
        Variant ep2world4 = Variant.of("ep2-world4", "--nproc-per-node", "4", "--expert-model-parallel-size", "2",
                "--moe-token-dispatcher-type", "alltoall");
        for (Variant v : new Variant[] {EP2, ep2world4, EP2_PP2}) {
            List<StepResult> unsharded = TrajectoryParity.run(base, v.with(DISTOPT));
            TrajectoryParity.assertClose(unsharded, TrajectoryParity.run(base, v.with(zero2)), 1e-6,
                    v + " optim_grads vs optim");
        }
        // the shards are what is kept: fp32 gradients below the fp32 weights' bytes (equal under optim)
        for (Variant strategy : new Variant[] {DISTOPT, zero2}) {
            List<String> args = mockMoe(1);
            args.addAll(EP2.with(strategy).flags());
            RankMemory m = RankMemoryLine.parse(PretrainRunner.runLogged(args));
            if (strategy == zero2) {
                assertThat(m.gradientBytes()).as("EP=2 optim_grads: %s", m).isLessThan(m.parameterBytes());
            } else {
                assertThat(m.gradientBytes()).as("EP=2 optim: %s", m).isEqualTo(m.parameterBytes());
            }
        }
    }

    static final Variant ZERO3 = Variant.of("zero3", "--data-parallel-sharding-strategy", "optim_grads_params");
    /** EP=2 on 4 ranks: data x context parallelism 4 (the dense units' group), expert-data 2 (the expert units'). */
    static final Variant EP2_WORLD4 = Variant.of("ep2-world4", "--nproc-per-node", "4", "--expert-model-parallel-size",
            "2", "--moe-token-dispatcher-type", "alltoall");
    /** EP=2 on 8 ranks: data x context parallelism 8, expert-data 4. */
    static final Variant EP2_WORLD8 = Variant.of("ep2-world8", "--nproc-per-node", "8", "--expert-model-parallel-size",
            "2", "--moe-token-dispatcher-type", "alltoall");

    /**
     * ZeRO-3 under expert parallelism: each MoE layer is three units here (its norms, attention and
     * router; its routed experts; its shared expert), the dense ones sharded, gathered and
     * reduce-scattered over data x context parallelism, the experts over the expert-data group, all
     * gathered around the layer's forward and backward. EP=2 on 2 ranks
     * (DP 2, expert-data 1), 4 (DP 4, expert-data 2) and 8 (DP 8, expert-data 4), and EP=2 x TP=2 + SP
     * (DP 2, expert-data 1; the router's and the norms' partial gradients completed on the shard) follow the
     * distributed optimizer's run on the same layout within 1e-6 over 5 fp32 iterations and the
     * one-rank run within 1e-5.
     */
    @Test
    void zero3UnderExpertsFollowsTheDistributedOptimizer() {
        List<String> base = TrajectoryParity.replace(mockMoe(5), "--global-batch-size", "8");
        List<StepResult> single = TrajectoryParity.run(base, SINGLE);
        for (Variant v : new Variant[] {EP2, EP2_WORLD4, EP2_WORLD8, TrajectoryParity.EP2_TP2_SP}) {
            List<StepResult> optim = TrajectoryParity.run(base, v.with(DISTOPT));
            List<StepResult> zero3 = TrajectoryParity.run(base, v.with(ZERO3));
            TrajectoryParity.assertClose(optim, zero3, 1e-6, v + " optim_grads_params vs optim");
            TrajectoryParity.assertClose(single, zero3, 1e-5, v + " optim_grads_params vs one rank");
        }
    }

    /**
     * What a rank keeps under ZeRO-3 with EP=2 on 4 ranks: its piece of every unit, the dense
     * units' 1/4 and the expert units' 1/2, which is the distributed optimizer's shard of the
     * same parameters (half of its two Adam moments: fp32 weights are their own masters) up to each
     * unit's padding; the fp32 gradient shard has the same length, and Adam's two moments twice that
     * (measured: 29,600 bytes of weights on rank 0 against optim's 93,824). An evaluation after the
     * step prints optim's validation loss.
     */
    @Test
    void zero3UnderExpertsKeepsOnlyItsShards() {
        String optimLog = logged(EP2_WORLD4.with(DISTOPT));
        String zero3Log = logged(EP2_WORLD4.with(ZERO3));
        assertThat(validationLoss(zero3Log)).as("an evaluation gathers the units as a training forward does")
                .isEqualTo(validationLoss(optimLog));
        RankMemory optim = RankMemoryLine.parse(optimLog);
        RankMemory zero3 = RankMemoryLine.parse(zero3Log);
        long optimShard = optim.optimizerBytes() / 2; // two moments over the same shard (no master copy)
        assertThat(zero3.parameterBytes()).as("ZeRO-3 %s vs optim %s", zero3, optim)
                .isBetween(optimShard, optimShard + 4L * 3 * 16); // under 4 pad elements in each of at most 16 units
        assertThat(zero3.gradientBytes()).isEqualTo(zero3.parameterBytes());
        assertThat(zero3.optimizerBytes()).isEqualTo(2 * zero3.parameterBytes());
        assertThat(zero3.parameterBytes()).isLessThan(optim.parameterBytes() / 2);
    }

    /** One iteration of the mock MoE on {@code v}, with an evaluation after it: the log. */
    private static String logged(Variant v) {
        List<String> args = mockMoe(1);
        args.addAll(List.of("--eval-interval", "1", "--eval-iters", "1"));
        args.addAll(v.flags());
        return PretrainRunner.runLogged(args);
    }

    /** The printed validation loss (7 significant digits). */
    private static String validationLoss(String log) {
        Matcher m = Pattern.compile("validation loss at iteration 1 \\| lm loss value: (\\S+)")
                .matcher(log);
        assertThat(m.find()).as("a validation line in %s", log).isTrue();
        return m.group(1);
    }

    /**
     * A checkpoint written under ZeRO-3 with EP=2 on 4 ranks (its optimizer state converted into
     * the distributed optimizer's order: dense over DP, then experts over the expert-data group)
     * continues under optim, and one written under optim continues under ZeRO-3, as the straight
     * optim run does (1e-6).
     */
    @Test
    void zero3AndOptimCheckpointsCrossUnderExperts() {
        List<String> four = TrajectoryParity.replace(mockMoe(4), "--global-batch-size", "8");
        List<String> two = TrajectoryParity.replace(mockMoe(2), "--global-batch-size", "8");
        List<StepResult> straight = TrajectoryParity.run(four, EP2_WORLD4.with(DISTOPT));
        Path zero3Ckpt = tmp.resolve("zero3");
        TrajectoryParity.run(withSave(new ArrayList<>(two), zero3Ckpt), EP2_WORLD4.with(ZERO3));
        List<StepResult> underOptim = TrajectoryParity.run(withLoad(new ArrayList<>(four), zero3Ckpt),
                EP2_WORLD4.with(DISTOPT));
        assertThat(underOptim).extracting(StepResult::iteration).containsExactly(3L, 4L);
        TrajectoryParity.assertClose(straight.subList(2, 4), underOptim, 1e-6, "ZeRO-3 checkpoint resumed under optim");

        Path optimCkpt = tmp.resolve("optim");
        TrajectoryParity.run(withSave(new ArrayList<>(two), optimCkpt), EP2_WORLD4.with(DISTOPT));
        List<StepResult> underZero3 = TrajectoryParity.run(withLoad(new ArrayList<>(four), optimCkpt),
                EP2_WORLD4.with(ZERO3));
        TrajectoryParity.assertClose(straight.subList(2, 4), underZero3, 1e-6, "optim checkpoint resumed under ZeRO-3");
    }

    /**
     * bf16 weights, 16 micro-batches per step at PP=2: the buffers add each micro-batch's bf16
     * gradient into the fp32 main gradient (in the schedule's backward), the flat step sums them in
     * bf16. The one-rank run on the buffers (fp32 accumulation, as Megatron) is followed closely by
     * the buffered pipeline and less closely by the flat one.
     */
    @Test
    void bf16PipelineMicroBatchesAccumulateInFp32() {
        List<String> base = dense(3, 16);
        base.addAll(List.of("--bf16", "--untie-embeddings-and-output-weights", "--hidden-dropout", "0",
                "--attention-dropout", "0"));
        List<StepResult> single = TrajectoryParity.run(base, SINGLE);
        List<StepResult> buffered = TrajectoryParity.run(base, PP2);
        List<StepResult> flat = TrajectoryParity.onFlatStep(() -> TrajectoryParity.run(base, PP2));
        double bufferedGap = normGap(single, buffered);
        double flatGap = normGap(single, flat);
        assertThat(bufferedGap).as("buffered PP=2 vs one rank, grad norms (flat step: %s)", flatGap)
                .isLessThan(flatGap / 4);
    }

    /**
     * The buffers are really what the step trains under PP=2 and EP=2 (x PP=2): with bf16 weights
     * rank 0's memory line counts, per weight element of 2 bytes, a bf16 gradient-buffer element
     * and an fp32 main-gradient element (6 bytes: 3x the weights), where the flat step keeps only
     * libtorch's bf16 {@code .grad}s (1x).
     */
    @Test
    void theStepTrainsTheBuffersUnderPipelineAndExperts() {
        for (Variant v : new Variant[] {PP2, EP2, EP2_PP2}) {
            List<String> args = mockMoe(1);
            args.add("--bf16");
            args.addAll(v.flags());
            RankMemory buffered = RankMemoryLine.parse(PretrainRunner.runLogged(args));
            assertThat(buffered.gradientBytes()).as("%s buffered: %s", v, buffered).isEqualTo(3 * buffered.parameterBytes());
            RankMemory flat = RankMemoryLine.parse(TrajectoryParity.onFlatStep(() -> PretrainRunner.runLogged(args)));
            assertThat(flat.gradientBytes()).as("%s flat: %s", v, flat).isEqualTo(flat.parameterBytes());
        }
    }

    /**
     * fp32 weights under expert parallelism are their own masters, as over the dense buffer: at
     * EP=2 without the distributed optimizer rank 0's optimizer bytes are AdamW's two moments over
     * its weights (2x the fp32 weights' bytes; 3x while the masters were a copy), and with it less.
     */
    @Test
    void fp32ExpertWeightsAreTheirOwnMasters() {
        List<String> args = mockMoe(1);
        args.addAll(EP2.flags());
        RankMemory whole = RankMemoryLine.parse(PretrainRunner.runLogged(args));
        assertThat(whole.optimizerBytes()).as("EP=2 fp32: %s", whole).isEqualTo(2 * whole.parameterBytes());
        args.addAll(DISTOPT.flags());
        RankMemory sharded = RankMemoryLine.parse(PretrainRunner.runLogged(args));
        assertThat(sharded.optimizerBytes()).as("EP=2 fp32 distributed optimizer: %s", sharded)
                .isLessThan(2 * sharded.parameterBytes());
    }

    /** Largest relative gradient-norm difference over the steps. */
    private static double normGap(List<StepResult> a, List<StepResult> b) {
        double gap = 0;
        for (int i = 0; i < a.size(); i++) {
            gap = Math.max(gap, Math.abs(a.get(i).gradNorm() - b.get(i).gradNorm()) / a.get(i).gradNorm());
        }
        return gap;
    }

    /**
     * A checkpoint written by the flat step at EP=2 x PP=2 (distributed optimizer: the expert shard
     * after the dense one) continues on the buffers, and one written on the buffers continues on the
     * flat step, as the straight run does.
     */
    @Test
    void checkpointsCrossBetweenTheFlatAndTheBufferedStep() {
        Variant v = EP2_PP2.with(DISTOPT);
        List<StepResult> straight = TrajectoryParity.run(mockMoe(4), v);
        Path flatCkpt = tmp.resolve("flat");
        TrajectoryParity.onFlatStep(() -> TrajectoryParity.run(withSave(mockMoe(2), flatCkpt), v));
        List<StepResult> onBuffers = TrajectoryParity.run(withLoad(mockMoe(4), flatCkpt), v);
        assertThat(onBuffers).extracting(StepResult::iteration).containsExactly(3L, 4L);
        TrajectoryParity.assertClose(straight.subList(2, 4), onBuffers, 1e-6, "flat checkpoint resumed on buffers");

        Path bufferedCkpt = tmp.resolve("buffered");
        TrajectoryParity.run(withSave(mockMoe(2), bufferedCkpt), v);
        List<StepResult> onFlat = TrajectoryParity.onFlatStep(() -> TrajectoryParity.run(withLoad(mockMoe(4), bufferedCkpt), v));
        TrajectoryParity.assertClose(straight.subList(2, 4), onFlat, 1e-6, "buffered checkpoint resumed on the flat step");
    }

    private static List<String> withSave(List<String> a, Path dir) {
        a.addAll(List.of("--save", dir.toString()));
        return a;
    }

    private static List<String> withLoad(List<String> a, Path dir) {
        a.addAll(List.of("--load", dir.toString()));
        return a;
    }
}
