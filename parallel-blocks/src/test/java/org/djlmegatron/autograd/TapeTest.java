package org.djlmegatron.autograd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.djlmegatron.ParityHarness.onRanks;
import static org.djlmegatron.ParityHarness.tpRank;
import static org.djlmegatron.ParityHarness.tpSize;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.pytorch.jni.JniUtils;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.ParityHarness.Sharding;
import org.djlmegatron.ParityHarness.Tensor;
import org.djlmegatron.parallel.RankContext;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The tape and the region mappings on their own: identity cuts do not change gradients (bit for
 * bit), the mappings' forward values are exact and identical on every rank, and each crossing's
 * adjoint is the collective it promises.
 */
class TapeTest {

    private static final Tensor X = Tensor.random(1, 1.0, 4, 8);
    private static final Tensor W = Tensor.random(2, 0.5, 8, 8);

    /** A scalar loss of x and w, possibly with cuts on the rank's tape. */
    private interface Chain {
        NDArray loss(RankContext ctx, NDArray x, NDArray w);
    }

    /** Gradients of x and w (in that order) through {@code chain}. */
    private static List<float[]> gradients(Chain chain) {
        return onRanks(1, ctx -> {
            NDManager m = ctx.manager();
            NDArray x = X.toNd(m);
            NDArray w = W.toNd(m);
            x.setRequiresGradient(true);
            w.setRequiresGradient(true);
            ctx.tape().backward(chain.loss(ctx, x, w));
            assertThat(ctx.tape().size()).as("backward consumes the cuts").isZero();
            return List.of(x.getGradient().toFloatArray(), w.getGradient().toFloatArray());
        }).get(0);
    }

    /** w is used on both sides of the cut, so its gradient accumulates over two segments. */
    @Test
    void identityCutGivesBitIdenticalGradients() {
        List<float[]> plain = gradients((ctx, x, w) -> x.matMul(w).tanh().matMul(w).square().sum());
        List<float[]> cut = gradients((ctx, x, w) -> {
            NDArray h = ctx.tape().cut(x.matMul(w).tanh(), Crossing.IDENTITY);
            assertThat(ctx.tape().size()).isEqualTo(1);
            return h.matMul(w).square().sum();
        });
        assertThat(cut.get(0)).containsExactly(plain.get(0));
        assertThat(cut.get(1)).containsExactly(plain.get(1));
    }

    /** A residual stream and a branch crossing one cut together, then a second cut. */
    @Test
    void multiSourceIdentityCutsGiveBitIdenticalGradients() {
        List<float[]> plain = gradients((ctx, x, w) -> {
            NDArray h = x.matMul(w);
            NDArray y = h.add(h.tanh().matMul(w));
            return y.add(y.sin().matMul(w)).square().sum();
        });
        List<float[]> cut = gradients((ctx, x, w) -> {
            NDArray h = x.matMul(w);
            NDList c = ctx.tape().cut(new NDList(h, h.tanh()), List.of(Crossing.IDENTITY, Crossing.IDENTITY));
            NDArray y = c.get(0).add(c.get(1).matMul(w));
            NDList d = ctx.tape().cut(new NDList(y, y.sin()), List.of(Crossing.IDENTITY, Crossing.IDENTITY));
            assertThat(ctx.tape().size()).isEqualTo(2);
            return d.get(0).add(d.get(1).matMul(w)).square().sum();
        });
        assertThat(cut.get(0)).containsExactly(plain.get(0));
        assertThat(cut.get(1)).containsExactly(plain.get(1));
    }

    @Test
    void withoutGradModeCutsOnlyApplyTheForward() {
        onRanks(1, ctx -> {
            JniUtils.setGradMode(false);
            try {
                assertThat(Tape.isRecording()).isFalse();
                NDArray x = X.toNd(ctx.manager());
                NDArray y = ctx.tape().cut(x, Crossing.IDENTITY);
                assertThat(ctx.tape().size()).isZero();
                assertThat(y.toFloatArray()).containsExactly(X.data());
            } finally {
                JniUtils.setGradMode(true);
            }
            return null;
        });
    }

    /** Rank r's contribution: a different random tensor per rank. */
    private static Tensor contribution(int rank) {
        return Tensor.random(100 + rank, 1.0, 3, 4);
    }

    /** The ranks' contributions summed with float additions in rank order, as the group reduces. */
    private static float[] sumInRankOrder(int tp) {
        float[] sum = contribution(0).data().clone();
        for (int r = 1; r < tp; r++) {
            float[] c = contribution(r).data();
            for (int i = 0; i < sum.length; i++) {
                sum[i] += c[i];
            }
        }
        return sum;
    }

    private static final Tensor UPSTREAM = Tensor.random(200, 1.0, 3, 4);

    private record Mapped(float[] value, float[] grad) {}

    @ParameterizedTest(name = "TP={0}")
    @ValueSource(ints = {2, 4})
    void reduceFromRegionIsTheExactSumWithIdentityBackward(int tp) {
        List<Mapped> ranks = onRanks(tp, ctx -> {
            RegionMappings mappings = new RegionMappings(ctx.tensorGroup());
            NDArray x = contribution(tpRank(ctx)).toNd(ctx.manager());
            x.setRequiresGradient(true);
            NDArray y = mappings.reduceFromRegion(x.mul(Scalar.of(ctx.manager(), 1))); // a non-leaf, as in a layer
            ctx.tape().backward(y.mul(UPSTREAM.toNd(ctx.manager())).sum());
            return new Mapped(y.toFloatArray(), x.getGradient().toFloatArray());
        });
        float[] sum = sumInRankOrder(tp);
        for (Mapped r : ranks) {
            assertThat(r.value()).as("forward: the sum, bit for bit on every rank").containsExactly(sum);
            assertThat(r.grad()).as("backward: identity").containsExactly(UPSTREAM.data());
        }
    }

    @ParameterizedTest(name = "TP={0}")
    @ValueSource(ints = {2, 4})
    void gatherFromRegionIsTheExactConcatenationWithSliceBackward(int tp) {
        for (int axis : new int[] {0, -1}) {
            Sharding split = Sharding.split(axis);
            List<Mapped> ranks = onRanks(tp, ctx -> {
                RegionMappings mappings = new RegionMappings(ctx.tensorGroup());
                NDArray x = contribution(tpRank(ctx)).toNd(ctx.manager());
                x.setRequiresGradient(true);
                NDArray y = mappings.gatherFromRegion(x.mul(Scalar.of(ctx.manager(), 1)), axis);
                Tensor upstream = Tensor.random(300, 1.0, y.getShape().getShape());
                ctx.tape().backward(y.mul(upstream.toNd(ctx.manager())).sum());
                float[] expectedGrad = split.shard(upstream, tpRank(ctx), tpSize(ctx)).data();
                assertThat(x.getGradient().toFloatArray()).as("backward: this rank's slice")
                        .containsExactly(expectedGrad);
                return new Mapped(y.toFloatArray(), null);
            });
            List<Tensor> parts = new ArrayList<>();
            for (int r = 0; r < tp; r++) {
                parts.add(contribution(r));
            }
            float[] concat = Tensor.concat(parts, axis).data();
            for (Mapped r : ranks) {
                assertThat(r.value()).as("forward along %d: the concatenation on every rank", axis)
                        .containsExactly(concat);
            }
        }
    }

    /**
     * Each crossing through a cut: the forward value and the gradient reaching the source for the
     * loss sum(y * U) with the same U on every rank.
     */
    @ParameterizedTest(name = "TP={0}")
    @ValueSource(ints = {2, 4})
    void crossingAdjointsAreTheirCollectives(int tp) {
        onRanks(tp, ctx -> {
            RegionMappings mappings = new RegionMappings(ctx.tensorGroup());
            int rank = tpRank(ctx);
            Tensor x = contribution(rank);
            Tensor u = Tensor.random(400, 1.0, 3, 4);
            Tensor uWide = Tensor.random(401, 1.0, 3, 4L * tp);
            Tensor uNarrow = Tensor.random(402, 1.0, 3, 4L / tp);

            // f: identity forward, gradient summed over the ranks (all get U, so tp * U)
            float[] g = throughCut(ctx, x, mappings.copyToRegion(), u, x.data());
            assertThat(g).containsExactly(scaled(u.data(), tp));
            // sequence gather along axis 1: forward all-gather, backward reduce-scatter
            List<Tensor> all = new ArrayList<>();
            for (int r = 0; r < tp; r++) {
                all.add(contribution(r));
            }
            g = throughCut(ctx, x, mappings.gatherFromSequenceRegion(1), uWide,
                    Tensor.concat(all, 1).data());
            assertThat(g).containsExactly(scaled(Sharding.split(1).shard(uWide, rank, tp).data(), tp));
            // scatter: forward this rank's slice, backward all-gather
            g = throughCut(ctx, x, mappings.scatterToRegion(1), uNarrow,
                    Sharding.split(1).shard(x, rank, tp).data());
            List<Tensor> gathered = new ArrayList<>();
            for (int r = 0; r < tp; r++) {
                gathered.add(uNarrow);
            }
            assertThat(g).containsExactly(Tensor.concat(gathered, 1).data());
            // sequence reduce-scatter: forward the sum's slice, backward all-gather
            g = throughCut(ctx, x, mappings.reduceScatterToSequenceRegion(1), uNarrow,
                    Sharding.split(1).shard(new Tensor(x.shape(), sumInRankOrder(tp)), rank, tp).data());
            assertThat(g).containsExactly(Tensor.concat(gathered, 1).data());
            return null;
        });
    }

    /** Cuts x with {@code crossing}, checks the forward value, returns x's gradient for sum(y * u). */
    private static float[] throughCut(RankContext ctx, Tensor xs, Crossing crossing, Tensor u, float[] forward) {
        NDManager m = ctx.manager();
        NDArray x = xs.toNd(m);
        x.setRequiresGradient(true);
        NDArray y = ctx.tape().cut(x.mul(Scalar.of(ctx.manager(), 1)), crossing);
        assertThat(y.toFloatArray()).as("forward of the crossing").containsExactly(forward);
        ctx.tape().backward(y.mul(u.toNd(m)).sum());
        return x.getGradient().toFloatArray();
    }

    private static float[] scaled(float[] v, int k) {
        float[] out = new float[v.length];
        for (int i = 0; i < v.length; i++) {
            out[i] = v[i] * k;
        }
        return out;
    }
}
