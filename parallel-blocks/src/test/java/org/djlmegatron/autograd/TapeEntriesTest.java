package org.djlmegatron.autograd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.djlmegatron.ParityHarness.onRanks;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.ParityHarness.Tensor;
import org.djlmegatron.parallel.RankContext;
import org.junit.jupiter.api.Test;

/**
 * The tape's general entries: checkpointed segments (with carried tensors, collectives inside and
 * nesting) give bit-identical gradients; general cuts apply their adjoint; extra loss roots are
 * scaled like the main loss; gradient-final hooks fire in backward order; several tapes live at
 * once; the debug mode names a tensor that skipped a cut.
 */
class TapeEntriesTest {

    private static final Tensor X = Tensor.random(1, 1.0, 4, 8);
    private static final Tensor W = Tensor.random(2, 0.5, 8, 8);

    private interface Chain {
        NDArray loss(RankContext ctx, NDArray x, NDArray w);
    }

    /** Gradients of x and w on every rank of a TP group of {@code tp}. */
    private static List<List<float[]>> gradients(int tp, Chain chain) {
        return onRanks(tp, ctx -> {
            NDManager m = ctx.manager();
            NDArray x = X.toNd(m);
            NDArray w = W.toNd(m);
            x.setRequiresGradient(true);
            w.setRequiresGradient(true);
            ctx.tape().backward(chain.loss(ctx, x, w));
            assertThat(ctx.tape().size()).isZero();
            return List.of(x.getGradient().toFloatArray(), w.getGradient().toFloatArray());
        });
    }

    private static void assertBitIdentical(List<List<float[]>> a, List<List<float[]>> b) {
        for (int r = 0; r < a.size(); r++) {
            assertThat(b.get(r).get(0)).as("x grad, rank %d", r).containsExactly(a.get(r).get(0));
            assertThat(b.get(r).get(1)).as("w grad, rank %d", r).containsExactly(a.get(r).get(1));
        }
    }

    /** h = tanh(x w); y = h + sin(h w) (w used twice); loss = sum((y w)^2). */
    private static NDArray block(NDArray h, NDArray w) {
        return h.add(h.matMul(w).sin());
    }

    /** As in a transformer layer: h feeds the recomputed branch once and the residual once. */
    @Test
    void checkpointWithACarriedResidualIsBitIdentical() {
        Chain plain = (ctx, x, w) -> {
            NDArray h = x.tanh();
            NDArray y = h.matMul(w).sin().tanh();
            return y.add(h).square().sum();
        };
        Chain recomputed = (ctx, x, w) -> {
            NDArray h = x.tanh();
            NDList live = new NDList(h);
            NDArray y;
            try (Tape.Carry c = ctx.tape().carry(live)) {
                y = ctx.tape().checkpoint(h, in -> in.matMul(w).sin().tanh());
            }
            assertThat(ctx.tape().size()).isEqualTo(1);
            return y.add(live.get(0)).square().sum();
        };
        assertBitIdentical(gradients(1, plain), gradients(1, recomputed));
    }

    @Test
    void checkpointAroundCollectivesAndNestedCheckpointsIsBitIdentical() {
        RegionMappingsFactory f = ctx -> new RegionMappings(ctx.tensorGroup());
        Chain plain = (ctx, x, w) -> {
            NDArray h = ctx.tape().cut(x.matMul(w), f.of(ctx).copyToRegion());
            NDArray y = f.of(ctx).reduceFromRegion(h.tanh().matMul(w));
            return block(y, w).square().sum();
        };
        Chain recomputed = (ctx, x, w) -> ctx.tape().checkpoint(x.matMul(w), a -> {
            NDArray h = ctx.tape().cut(a, f.of(ctx).copyToRegion());
            NDArray y = f.of(ctx).reduceFromRegion(h.tanh().matMul(w));
            return ctx.tape().checkpoint(y, b -> block(b, w));
        }).square().sum();
        assertBitIdentical(gradients(2, plain), gradients(2, recomputed));
    }

    private interface RegionMappingsFactory {
        RegionMappings of(RankContext ctx);
    }

    @Test
    void aGeneralCutAppliesItsAdjointToEveryOutput() {
        // forward swaps the two halves of x's columns; the adjoint swaps the gradients back
        Chain swapped = (ctx, x, w) -> {
            NDList halves = x.matMul(w).split(2, 1);
            NDList out = ctx.tape().function(halves, in -> new NDList(in.get(1), in.get(0)),
                    g -> new NDList(g.get(1), g.get(0)));
            return out.get(0).mul(out.get(0)).sum().add(out.get(1).sin().sum());
        };
        Chain direct = (ctx, x, w) -> {
            NDList halves = x.matMul(w).split(2, 1);
            return halves.get(1).mul(halves.get(1)).sum().add(halves.get(0).sin().sum());
        };
        assertBitIdentical(gradients(1, direct), gradients(1, swapped));
    }

    @Test
    void anExtraLossRootIsScaledLikeTheMainLoss() {
        List<float[]> got = onRanks(1, ctx -> {
            NDManager m = ctx.manager();
            NDArray x = X.toNd(m);
            x.setRequiresGradient(true);
            NDArray h = x.tanh();
            ctx.tape().addLoss(h.square().sum()); // recorded in segment 0
            NDArray y = ctx.tape().cut(h, Crossing.IDENTITY);
            ctx.tape().backward(y.sum(), Scalar.of(m, 0.5));
            return List.of(x.getGradient().toFloatArray());
        }).get(0);
        List<float[]> want = onRanks(1, ctx -> {
            NDManager m = ctx.manager();
            NDArray x = X.toNd(m);
            x.setRequiresGradient(true);
            NDArray h = x.tanh();
            ctx.tape().backward(h.sum().add(h.square().sum()).mul(Scalar.of(m, 0.5)));
            return List.of(x.getGradient().toFloatArray());
        }).get(0);
        float[] a = got.get(0);
        float[] b = want.get(0);
        for (int i = 0; i < a.length; i++) {
            assertThat(a[i]).isCloseTo(b[i], org.assertj.core.data.Offset.offset(1e-6f));
        }
    }

    @Test
    void gradientFinalHooksFireInBackwardOrderOncePerParameter() {
        List<Object> fired = onRanks(1, ctx -> {
            NDManager m = ctx.manager();
            NDArray w1 = m.ones(new Shape(4, 4));
            NDArray w2 = m.ones(new Shape(4, 4));
            w1.setRequiresGradient(true);
            w2.setRequiresGradient(true);
            List<Object> order = new ArrayList<>();
            Tape tape = ctx.tape();
            tape.onGradientsFinal(order::addAll);
            NDArray x = X.toNd(m).get(":, :4");
            tape.noteUse("w1");
            NDArray h = x.matMul(w1);
            h = tape.cut(h, Crossing.IDENTITY);
            tape.noteUse("w2");
            tape.noteUse("w1"); // used again later: final only after its first segment
            NDArray y = h.matMul(w2).matMul(w1);
            tape.backward(y.sum());
            return order;
        }).get(0);
        assertThat(fired).hasSize(2);
        assertThat(fired.get(0)).isEqualTo("w2");
        assertThat(fired.get(1)).isEqualTo("w1");
    }

    /**
     * Before each segment's backward the hook gets what that segment may read: the parameters noted
     * in it and those of the last earlier segment with notes (a block noted once, split by a cut).
     */
    @Test
    void beforeSegmentHooksNameWhatEachSegmentReads() {
        List<List<Object>> seen = onRanks(1, ctx -> {
            NDManager m = ctx.manager();
            NDArray w1 = m.ones(new Shape(4, 4));
            NDArray w2 = m.ones(new Shape(4, 4));
            w1.setRequiresGradient(true);
            w2.setRequiresGradient(true);
            List<List<Object>> calls = new ArrayList<>();
            Tape tape = ctx.tape();
            tape.beforeSegmentBackward(uses -> calls.add(List.copyOf(uses)));
            NDArray x = X.toNd(m).get(":, :4");
            tape.noteUse("w1"); // segment 0
            NDArray h = tape.cut(x.matMul(w1), Crossing.IDENTITY);
            h = tape.cut(h.matMul(w1), Crossing.IDENTITY); // segment 1: still w1's block, nothing noted
            tape.noteUse("w2"); // segment 2
            tape.noteUse("w2");
            NDArray y = h.matMul(w2);
            tape.backward(y.sum());
            return calls;
        }).get(0);
        assertThat(seen).containsExactly(List.of("w2", "w1"), List.of("w1"), List.of("w1"));
    }

    @Test
    void severalTapesLiveAtOnce() {
        List<float[]> got = onRanks(1, ctx -> {
            NDManager m = ctx.manager();
            NDArray w = W.toNd(m);
            w.setRequiresGradient(true);
            Tape first = ctx.tape();
            NDArray a = ctx.tape().cut(X.toNd(m).matMul(w), Crossing.IDENTITY).tanh().sum();
            Tape second = new Tape();
            Tape previous = ctx.useTape(second);
            assertThat(previous).isSameAs(first);
            NDArray b = ctx.tape().cut(X.toNd(m).matMul(w).mul(Scalar.of(m, 2)), Crossing.IDENTITY).tanh().sum();
            assertThat(first.size()).isEqualTo(1);
            assertThat(second.size()).isEqualTo(1);
            second.backward(b); // in-flight micro-batches finish in any order
            first.backward(a);
            ctx.useTape(first);
            return List.of(w.getGradient().toFloatArray());
        }).get(0);
        List<float[]> want = onRanks(1, ctx -> {
            NDManager m = ctx.manager();
            NDArray w = W.toNd(m);
            w.setRequiresGradient(true);
            NDArray b = X.toNd(m).matMul(w).mul(Scalar.of(m, 2)).tanh().sum();
            ctx.tape().backward(b);
            NDArray a = X.toNd(m).matMul(w).tanh().sum();
            ctx.tape().backward(a);
            return List.of(w.getGradient().toFloatArray());
        }).get(0);
        assertThat(got.get(0)).containsExactly(want.get(0));
    }

    @Test
    void debugModeNamesATensorThatSkippedACut() {
        assertThatThrownBy(() -> onRanks(1, ctx -> {
            NDManager m = ctx.manager();
            NDArray x = X.toNd(m);
            x.setRequiresGradient(true);
            Tape tape = ctx.tape();
            tape.setDebug(true);
            NDArray a = tape.cut(x.tanh(), Crossing.IDENTITY); // entry 0
            NDArray b = tape.cut(a.sin(), Crossing.IDENTITY);  // entry 1: a is not passed, yet used below
            tape.backward(b.add(a).sum());
            return null;
        })).hasMessageContaining("output 0 of the entry recorded at TapeEntriesTest")
                .hasMessageContaining("without crossing");
    }

    @Test
    void anAdjointReturningTheWrongShapeIsATapeException() {
        assertThatThrownBy(() -> onRanks(1, ctx -> {
            NDManager m = ctx.manager();
            NDArray x = X.toNd(m);
            x.setRequiresGradient(true);
            NDArray y = ctx.tape().function(new NDList(x.tanh()), in -> in, g -> new NDList(g.get(0).sum()))
                    .get(0);
            ctx.tape().backward(y.sum());
            return null;
        })).hasRootCauseInstanceOf(TapeException.class).hasMessageContaining("has shape");
    }
}
