package org.djlmegatron.training;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.ndarray.NDArray;
import ai.djl.nn.Parameter;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.AtomicReferenceArray;
import org.djlmegatron.comm.CollectiveAbortedException;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.optim.LearningRateSchedule;
import org.djlmegatron.optim.LearningRateSchedule.AnnealStyle;
import org.djlmegatron.optim.LearningRateSchedule.DecayStyle;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.training.buffers.Overlap;
import org.djlmegatron.training.buffers.ShardingStrategy;
import org.djlmegatron.training.model.MicroBatch;
import org.djlmegatron.transformer.Recompute;
import org.djlmegatron.transformer.TransformerConfig;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * {@code --overlap-grad-reduce} on two thread ranks (DP=2) with a tiny GPT whose layers are
 * separate backward segments (full recomputation), 16-element buckets: the first bucket is
 * reduced while backward is still running, and a rank failing in the middle of the backward (so
 * in the middle of the overlapped reductions) makes both ranks stop promptly, the other one with
 * the group, rank and operation its overlapped reduction was in; the same under ZeRO-2
 * ({@code optim_grads}), whose buckets are reduced to the rank owning each piece. The overlap works
 * on the contiguous buffers: native library only.
 */
@Tag("native")
class OverlappedReductionTest {

    private static final Duration TIMEOUT = Duration.ofSeconds(120);
    private static final TransformerConfig CFG = TransformerConfig.builder().numLayers(3).hiddenSize(32)
            .numAttentionHeads(4).numQueryGroups(4).ffnHiddenSize(64).vocabSize(64).maxPositionEmbeddings(16).build();

    private static StepConfig config() {
        return config(ShardingStrategy.NO_SHARD);
    }

    private static StepConfig config(ShardingStrategy sharding) {
        return StepConfig.builder(1, new LearningRateSchedule(1e-3, 1e-3, 0, 10, DecayStyle.CONSTANT, 0,
                AnnealStyle.LINEAR)).globalBatchSize(2).bucketElements(16).sharding(sharding).build();
    }

    private static GPTModel model(RankContext ctx) {
        GPTModel model = new GPTModel(ctx, CFG, false);
        model.initializeRandom(3, 0.02f);
        model.setRecompute(Recompute.full(Recompute.Method.UNIFORM, 1));
        return model;
    }

    /** Different tokens on each rank, so their gradients differ until reduced. */
    private static MicroBatch batch(int rank) {
        long[][] rows = new long[1][17];
        for (int i = 0; i < 17; i++) {
            rows[0][i] = (5L * i + 11L * rank + 3) % 64;
        }
        return MicroBatch.shifted(rows);
    }

    @Test
    void theLastBucketIsReducedWhileBackwardStillRuns() {
        AtomicReferenceArray<float[]> seen = new AtomicReferenceArray<>(2);
        List<Boolean> reducedInBackward = LocalWorld.run(RankGrid.create(2, 1, 1, 1, 1), TIMEOUT, ctx -> {
            GPTModel model = model(ctx);
            Parameter last = model.parameters().get(model.parameters().size() - 1).parameter();
            boolean[] ok = {false};
            int[] reports = {0};
            try (DistributedStep step = new DistributedStep(ctx, model, config(), new Overlap(true, false, TIMEOUT))) {
                ctx.tape().onGradientsFinal(done -> { // after the step's listener: bucket 0 has been handed over
                    reports[0]++;
                    if (done.stream().anyMatch(p -> p == last)) {
                        ok[0] = reports[0] == 1 && waitUntilEqualOnBothRanks(ctx.rank(), last, seen);
                    }
                });
                step.step(List.of(batch(ctx.rank())));
            }
            assertThat(reports[0]).as("backward segments reported").isGreaterThan(2);
            return ok[0];
        });
        assertThat(reducedInBackward).as("the last parameter's bucket reduced in the first of several reports")
                .containsExactly(true, true);
    }

    /** Polls this rank's gradient of {@code p} until both ranks see the same values (the bucket's average). */
    private static boolean waitUntilEqualOnBothRanks(int rank, Parameter p, AtomicReferenceArray<float[]> seen) {
        return pollGradients(rank, p, seen, (r0, r1) -> Arrays.equals(r0, r1));
    }

    /**
     * Publishes this rank's gradient of {@code p} in {@code seen} and polls it until both ranks'
     * satisfy {@code done} (rank 0's first), for at most half the timeout.
     */
    private static boolean pollGradients(int rank, Parameter p, AtomicReferenceArray<float[]> seen,
            java.util.function.BiPredicate<float[], float[]> done) {
        long deadline = System.nanoTime() + TIMEOUT.toNanos() / 2;
        while (System.nanoTime() < deadline) {
            try (NDArray g = p.getArray().getGradient()) {
                seen.set(rank, g.toFloatArray());
            }
            float[] r0 = seen.get(0);
            float[] r1 = seen.get(1);
            if (r0 != null && r1 != null && done.test(r0, r1)) {
                return true;
            }
            Thread.onSpinWait();
        }
        return false;
    }

    @Test
    void aRankFailingDuringTheOverlappedReductionStopsEveryRankNamingGroupRankAndOperation() {
        assertFailureStopsEveryRank(ShardingStrategy.NO_SHARD, "overlapped gradient all-reduce of bucket");
    }

    @Test
    void underZeroTwoARankFailingDuringTheOverlappedReductionStopsEveryRankNamingGroupRankAndOperation() {
        assertFailureStopsEveryRank(ShardingStrategy.OPTIM_GRADS, "overlapped gradient reduce to the owners of bucket");
    }

    /**
     * ZeRO-2: each micro-batch's workspace is reduced during its own backward, each piece of a bucket
     * to the rank whose shard holds it. Both ranks train on the same tokens (same local gradient g):
     * rank 1, which owns the end of the buffer, sees 2g in the last parameter's gradient while the
     * backward still runs; rank 0 keeps its own g there (non-owners receive nothing).
     */
    @Test
    void underZeroTwoTheOwnerGetsTheSumWhileBackwardStillRuns() {
        AtomicReferenceArray<float[]> seen = new AtomicReferenceArray<>(2);
        List<Boolean> ok = LocalWorld.run(RankGrid.create(2, 1, 1, 1, 1), TIMEOUT, ctx -> {
            GPTModel model = model(ctx);
            Parameter last = model.parameters().get(model.parameters().size() - 1).parameter();
            boolean[] result = {false};
            int[] reports = {0};
            try (DistributedStep step = new DistributedStep(ctx, model, config(ShardingStrategy.OPTIM_GRADS),
                    new Overlap(true, false, TIMEOUT))) {
                ctx.tape().onGradientsFinal(done -> {
                    reports[0]++;
                    if (done.stream().anyMatch(p -> p == last)) {
                        result[0] = reports[0] == 1 && waitUntilOwnerHoldsTheSum(ctx.rank(), last, seen);
                    }
                });
                step.step(List.of(batch(0)));
            }
            assertThat(reports[0]).as("backward segments reported").isGreaterThan(2);
            return result[0];
        });
        assertThat(ok).as("rank 1 held twice rank 0's gradient in the first of several reports").containsExactly(true, true);
    }

    /** Rank 0 publishes its gradient of {@code p}; rank 1 polls its own until it is twice that (within 1e-6). */
    private static boolean waitUntilOwnerHoldsTheSum(int rank, Parameter p, AtomicReferenceArray<float[]> seen) {
        return pollGradients(rank, p, seen, OverlappedReductionTest::twice);
    }

    private static boolean twice(float[] g, float[] sum) {
        double worst = 0;
        double scale = 1e-30;
        for (int i = 0; i < g.length; i++) {
            worst = Math.max(worst, Math.abs(sum[i] - 2.0 * g[i]));
            scale = Math.max(scale, Math.abs(2.0 * g[i]));
        }
        return scale > 1e-30 && worst <= 1e-6 * scale; // a zero gradient proves nothing
    }

    private static void assertFailureStopsEveryRank(ShardingStrategy sharding, String operation) {
        assertFailureStopsEveryRank(config(sharding), new Overlap(true, false, TIMEOUT), "(?is).*reduce.*",
                "(?s).*" + java.util.regex.Pattern.quote(operation) + ".*");
    }

    /**
     * Rank 1 fails in its backward under {@code config} and {@code overlap}: both ranks stop before
     * the timeout, rank 0 with the overlap communicator's abort, its rank and a collective matching
     * {@code collective}, noting overlapped work whose message matches {@code work}.
     */
    private static void assertFailureStopsEveryRank(StepConfig config, Overlap overlap, String collective, String work) {
        long t0 = System.nanoTime();
        assertThatThrownBy(() -> runFailingInRank1sBackward(config, overlap)).satisfies(e -> {
            assertThat(e).hasMessageContaining("rank 1 failed").hasMessageContaining("injected failure");
            Throwable[] others = e.getSuppressed();
            assertThat(others).as("rank 0's failure, and no rank abandoned").hasSize(1);
            Throwable rank0 = others[0].getCause();
            assertThat(rank0).isInstanceOf(CollectiveAbortedException.class);
            assertThat(((CollectiveAbortedException) rank0).where()).contains("dp-cp-overlap[0,1]").contains("rank 0")
                    .matches(collective);
            assertThat(rank0.getSuppressed()).anySatisfy(s -> assertThat(s.getMessage()).matches(work));
        });
        assertThat(Duration.ofNanos(System.nanoTime() - t0)).as("stopped by the abort, not a timeout")
                .isLessThan(TIMEOUT);
    }

    /**
     * ZeRO-3 with both overlap flags: rank 1 failing in the middle of its backward, while its
     * units' reduce-scatters and the next units' all-gathers run on the communication threads,
     * stops both ranks promptly, rank 0 naming the group, its rank and the overlapped collective.
     */
    @Test
    void aRankFailingDuringZero3sOverlappedCollectivesStopsEveryRankNamingGroupRankAndOperation() {
        assertFailureStopsEveryRank(zero3Config(), new Overlap(true, true, TIMEOUT), "(?is).*(allgather|reducescatter).*",
                "(?s).*overlapped (parameter all-gather|gradient reduce-scatter) of unit .*");
    }

    /**
     * ZeRO-3 with {@code --overlap-grad-reduce}: the last unit's reduce-scatter runs on the
     * communication thread while backward is held at its first gradient-final report (the
     * communication thread's busy time grows meanwhile; no gather is pending then without
     * {@code --overlap-param-gather}), on both ranks.
     */
    @Test
    void zero3sLastUnitIsReduceScatteredWhileBackwardStillRuns() {
        List<Boolean> reducedInBackward = LocalWorld.run(RankGrid.create(2, 1, 1, 1, 1), TIMEOUT, ctx -> {
            GPTModel model = model(ctx);
            boolean[] ok = {false};
            int[] reports = {0};
            try (DistributedStep step = new DistributedStep(ctx, model, zero3Config(), new Overlap(true, false, TIMEOUT))) {
                // the communication thread's busy time before backward starts (after the step's own hook, whose
                // gathers are waited for there): read at the first report instead, it may already include the
                // last unit's reduce-scatter, which the step's listener hands over just before
                double[] before = {Double.NaN};
                ctx.tape().beforeSegmentBackward(used -> {
                    if (Double.isNaN(before[0])) {
                        before[0] = step.overlapSeconds()[0];
                    }
                });
                ctx.tape().onGradientsFinal(done -> { // after the step's listener: the last unit has been handed over
                    if (++reports[0] == 1) {
                        long deadline = System.nanoTime() + TIMEOUT.toNanos() / 2;
                        while (!ok[0] && System.nanoTime() < deadline) {
                            ok[0] = step.overlapSeconds()[0] > before[0];
                            Thread.onSpinWait();
                        }
                    }
                });
                step.step(List.of(batch(ctx.rank())));
            }
            assertThat(reports[0]).as("backward segments reported").isGreaterThan(2);
            return ok[0];
        });
        assertThat(reducedInBackward).as("a unit reduce-scattered during the first of several reports")
                .containsExactly(true, true);
    }

    private static StepConfig zero3Config() {
        return StepConfig.builder(1, new LearningRateSchedule(1e-3, 1e-3, 0, 10, DecayStyle.CONSTANT, 0,
                AnnealStyle.LINEAR)).globalBatchSize(2).sharding(ShardingStrategy.OPTIM_GRADS_PARAMS).build();
    }

    /** One step on two ranks in which rank 1 throws at its backward's second gradient-final report. */
    private static void runFailingInRank1sBackward(StepConfig config, Overlap overlap) {
        LocalWorld.run(RankGrid.create(2, 1, 1, 1, 1), TIMEOUT, ctx -> {
            GPTModel model = model(ctx);
            int[] reports = {0};
            try (DistributedStep step = new DistributedStep(ctx, model, config, overlap)) {
                ctx.tape().onGradientsFinal(done -> {
                    if (++reports[0] == 2 && ctx.rank() == 1) {
                        throw new IllegalStateException("injected failure in rank 1's backward");
                    }
                });
                step.step(List.of(batch(ctx.rank())));
            }
            return null;
        });
    }
}
