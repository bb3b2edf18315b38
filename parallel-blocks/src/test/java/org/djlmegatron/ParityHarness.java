package org.djlmegatron;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.Function;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.nn.ParallelBlock;
import org.djlmegatron.nn.ShardLayout;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;

/**
 * The TP=N versus TP=1 experiment shared by the parity tests. Every rank builds the block with its
 * own {@link RankContext}, installs its shards of the same deterministic full parameters, runs the
 * same input (a leaf, so its gradient is checked too), the scalar loss {@code sum(output * W)}
 * for fixed random W, and backward through the tape. The outputs, input gradients and parameter
 * gradients of the ranks are re-assembled and compared with the single-rank run.
 *
 * <p>Values leave the rank threads as plain Java {@link Tensor}s: a rank's manager is closed when
 * its body returns.
 */
public final class ParityHarness {

    /** Largest max-abs difference of outputs, and relative error of gradients, accepted. */
    public static final double TOLERANCE = 1e-5;

    private static final long PARAM_SEED = 1234;
    private static final long INPUT_SEED = 5678;
    private static final long LOSS_WEIGHT_SEED = 91011;

    private ParityHarness() {}

    // ---------------------------------------------------------------- plain tensors

    /** A row-major float tensor held in Java memory. */
    public record Tensor(long[] shape, float[] data) {

        public static Tensor of(NDArray a) {
            return new Tensor(a.getShape().getShape().clone(),
                    a.toType(DataType.FLOAT32, false).toFloatArray());
        }

        /** Gaussian values drawn from {@code new Random(seed)}, scaled by {@code std}. */
        public static Tensor random(long seed, double std, long... shape) {
            Random rng = new Random(seed);
            float[] v = new float[Math.toIntExact(new Shape(shape).size())];
            for (int i = 0; i < v.length; i++) {
                v[i] = (float) (rng.nextGaussian() * std);
            }
            return new Tensor(shape.clone(), v);
        }

        public NDArray toNd(NDManager m) {
            return m.create(data, new Shape(shape));
        }

        public int rank() {
            return shape.length;
        }

        /** {@code this[..., start:start+length, ...]} along {@code axis} (negative counts back). */
        public Tensor slice(int axis, long start, long length) {
            int a = normalise(axis);
            long outer = product(0, a);
            long inner = product(a + 1, shape.length);
            long len = shape[a];
            float[] out = new float[Math.toIntExact(outer * length * inner)];
            int k = 0;
            for (long o = 0; o < outer; o++) {
                int from = Math.toIntExact((o * len + start) * inner);
                int n = Math.toIntExact(length * inner);
                System.arraycopy(data, from, out, k, n);
                k += n;
            }
            long[] s = shape.clone();
            s[a] = length;
            return new Tensor(s, out);
        }

        /** Concatenation along {@code axis}. */
        public static Tensor concat(List<Tensor> parts, int axis) {
            Tensor first = parts.get(0);
            int a = first.normalise(axis);
            long outer = first.product(0, a);
            long inner = first.product(a + 1, first.rank());
            long total = parts.stream().mapToLong(t -> t.shape[a]).sum();
            float[] out = new float[Math.toIntExact(outer * total * inner)];
            int k = 0;
            for (long o = 0; o < outer; o++) {
                for (Tensor t : parts) {
                    int n = Math.toIntExact(t.shape[a] * inner);
                    System.arraycopy(t.data, Math.toIntExact(o * n), out, k, n);
                    k += n;
                }
            }
            long[] s = first.shape.clone();
            s[a] = total;
            return new Tensor(s, out);
        }

        int normalise(int axis) {
            return axis < 0 ? axis + shape.length : axis;
        }

        private long product(int from, int to) {
            long p = 1;
            for (int i = from; i < to; i++) {
                p *= shape[i];
            }
            return p;
        }

        @Override
        public String toString() {
            return "Tensor" + Arrays.toString(shape);
        }
    }

    /** max |a - b|. */
    public static double maxAbsDiff(float[] a, float[] b) {
        assertThat(a).hasSameSizeAs(b);
        double d = 0;
        for (int i = 0; i < a.length; i++) {
            d = Math.max(d, Math.abs((double) a[i] - b[i]));
        }
        return d;
    }

    /** max |a - b| / max |b| (max |a - b| when b is zero). */
    public static double relativeError(float[] a, float[] b) {
        double scale = 0;
        for (float v : b) {
            scale = Math.max(scale, Math.abs(v));
        }
        double diff = maxAbsDiff(a, b);
        return scale == 0 ? diff : diff / scale;
    }

    public static double maxAbs(float[] a) {
        double m = 0;
        for (float v : a) {
            m = Math.max(m, Math.abs(v));
        }
        return m;
    }

    // ---------------------------------------------------------------- activation shardings

    /** How an activation (input, output or their gradients) is split over the TP group. */
    public interface Sharding {

        /** Rank {@code rank}'s part of {@code full} among {@code size} ranks. */
        Tensor shard(Tensor full, int rank, int size);

        /** The full tensor from every rank's part (in rank order). */
        Tensor assemble(List<Tensor> parts, String what);

        /** Full shape from a rank's part. */
        long[] fullShape(long[] local, int size);

        /** Every rank holds the whole tensor; the ranks must agree bit for bit. */
        Sharding REPLICATED = new Sharding() {
            @Override
            public Tensor shard(Tensor full, int rank, int size) {
                return full;
            }

            @Override
            public Tensor assemble(List<Tensor> parts, String what) {
                for (int r = 1; r < parts.size(); r++) {
                    assertThat(parts.get(r).data())
                            .as("%s: rank %d must equal rank 0 bit for bit", what, r)
                            .containsExactly(parts.get(0).data());
                }
                return parts.get(0);
            }

            @Override
            public long[] fullShape(long[] local, int size) {
                return local.clone();
            }
        };

        /** Equal contiguous slices along {@code axis} (the sequence, or the last axis). */
        static Sharding split(int axis) {
            return new Sharding() {
                @Override
                public Tensor shard(Tensor full, int rank, int size) {
                    long chunk = full.shape()[full.normalise(axis)] / size;
                    return full.slice(axis, chunk * rank, chunk);
                }

                @Override
                public Tensor assemble(List<Tensor> parts, String what) {
                    return Tensor.concat(parts, axis);
                }

                @Override
                public long[] fullShape(long[] local, int size) {
                    long[] s = local.clone();
                    s[axis < 0 ? axis + s.length : axis] *= size;
                    return s;
                }
            };
        }

        /** The last axis is [gate; up], each half split: rank r holds [gate_r; up_r]. */
        Sharding GATED_LAST_AXIS = new Sharding() {
            @Override
            public Tensor shard(Tensor full, int rank, int size) {
                long half = full.shape()[full.rank() - 1] / 2;
                long chunk = half / size;
                return Tensor.concat(List.of(full.slice(-1, chunk * rank, chunk),
                        full.slice(-1, half + chunk * rank, chunk)), -1);
            }

            @Override
            public Tensor assemble(List<Tensor> parts, String what) {
                List<Tensor> gates = new ArrayList<>();
                List<Tensor> ups = new ArrayList<>();
                for (Tensor p : parts) {
                    long half = p.shape()[p.rank() - 1] / 2;
                    gates.add(p.slice(-1, 0, half));
                    ups.add(p.slice(-1, half, half));
                }
                return Tensor.concat(List.of(Tensor.concat(gates, -1), Tensor.concat(ups, -1)), -1);
            }

            @Override
            public long[] fullShape(long[] local, int size) {
                return split(-1).fullShape(local, size);
            }
        };
    }

    // ---------------------------------------------------------------- ranks and parameters

    /** Runs {@code body} on every rank of a pure tensor-parallel grid of {@code tp} ranks. */
    public static <T> List<T> onRanks(int tp, Function<RankContext, T> body) {
        return LocalWorld.run(RankGrid.create(tp, tp, 1, 1, 1), body);
    }

    public static int tpRank(RankContext ctx) {
        return ctx.tensorGroup().rank();
    }

    public static int tpSize(RankContext ctx) {
        return ctx.tensorGroup().size();
    }

    /**
     * Installs this rank's shards of deterministic full parameters: each full tensor is drawn from
     * a generator seeded by the parameter's name (so every TP size sees the same model), with
     * norm scales around one and nothing exactly zero, so every parameter matters.
     */
    public static void installParameters(ParallelBlock block) {
        NDManager m = block.rankContext().manager();
        for (ShardedParameter sp : block.parameters()) {
            Tensor full = fullParameter(sp);
            NDArray fullNd = full.toNd(m);
            ParallelBlock.setShard(sp, sp.shardOf(fullNd).duplicate());
            fullNd.close();
        }
    }

    /** The full value {@link #installParameters} gives {@code sp}. */
    public static Tensor fullParameter(ShardedParameter sp) {
        long seed = PARAM_SEED * 1_000_003L + sp.name().hashCode();
        long[] shape = sp.fullShape().getShape();
        switch (sp.init()) {
            case ONES: {
                Tensor t = Tensor.random(seed, 0.1, shape);
                for (int i = 0; i < t.data().length; i++) {
                    t.data()[i] += 1f;
                }
                return t;
            }
            case ZEROS:
                return Tensor.random(seed, 0.1, shape);
            default:
                return Tensor.random(seed, 0.2, shape);
        }
    }

    /**
     * Sums over the TP group the gradients flagged {@link ShardedParameter#tpPartialGrad()}, as
     * {@code GPTModel.reducePartialGradients} does for a whole model.
     */
    public static void reducePartialGradients(ParallelBlock block) {
        RankContext ctx = block.rankContext();
        if (tpSize(ctx) == 1) {
            return;
        }
        for (ShardedParameter sp : block.parameters()) {
            if (sp.tpPartialGrad()) {
                NDArray g = sp.parameter().getArray().getGradient();
                NDArray sum = ctx.tensorGroup().allReduce(g, ReduceOp.SUM);
                g.subi(g).addi(sum);
                sum.close();
            }
        }
    }

    /** A parameter's gradient on one rank, with what is needed to re-assemble it. */
    public record Grad(ShardLayout layout, Tensor value) {}

    /** Every parameter gradient of {@code block}, by Megatron name, in parameter order. */
    public static Map<String, Grad> gradients(ParallelBlock block) {
        Map<String, Grad> out = new LinkedHashMap<>();
        for (ShardedParameter sp : block.parameters()) {
            out.put(sp.name(), new Grad(sp.layout(),
                    Tensor.of(sp.parameter().getArray().getGradient())));
        }
        return out;
    }

    // ---------------------------------------------------------------- the experiment

    /** What one rank computed: output, input gradient (or null), parameter gradients, loss. */
    public record RankRun(Tensor output, Tensor inputGrad, Map<String, Grad> grads, float loss) {}

    /**
     * A block under test.
     *
     * @param build the block, built for a rank (applied with {@link ParallelBlock#apply})
     * @param inputShape the full input shape
     * @param input how the input is split over the ranks
     * @param output how the output is split over the ranks
     * @param tokenIds for blocks that take token ids: the (replicated) int64 ids of shape
     *     {@code inputShape}; null for a random float input, whose gradient is checked
     */
    public record BlockCase(
            Function<RankContext, ParallelBlock> build,
            long[] inputShape,
            Sharding input,
            Sharding output,
            long[] tokenIds) {

        /** Replicated random input and output. */
        public static BlockCase replicated(Function<RankContext, ParallelBlock> build, long... inputShape) {
            return new BlockCase(build, inputShape, Sharding.REPLICATED,
                    Sharding.REPLICATED, null);
        }

        /** Token ids as input, replicated output. */
        public static BlockCase onTokens(
                Function<RankContext, ParallelBlock> build, long[] ids, long... inputShape) {
            return new BlockCase(build, inputShape, Sharding.REPLICATED,
                    Sharding.REPLICATED, ids);
        }

        public BlockCase withInput(Sharding s) {
            return new BlockCase(build, inputShape, s, output, tokenIds);
        }

        public BlockCase withOutput(Sharding s) {
            return new BlockCase(build, inputShape, input, s, tokenIds);
        }
    }

    /**
     * One rank's run of {@code c}: build, install parameters, forward on its part of the input,
     * loss {@code sum(output * W)} on its part of W, backward, partial gradients reduced.
     */
    public static RankRun runBlock(RankContext ctx, BlockCase c) {
        NDManager m = ctx.manager();
        int rank = tpRank(ctx);
        int size = tpSize(ctx);
        ParallelBlock block = c.build().apply(ctx);
        installParameters(block);

        NDArray x;
        if (c.tokenIds() != null) {
            x = m.create(c.tokenIds(), new Shape(c.inputShape()));
        } else {
            Tensor fullX = Tensor.random(INPUT_SEED, 1.0, c.inputShape());
            x = c.input().shard(fullX, rank, size).toNd(m);
            x.setRequiresGradient(true);
        }
        NDArray y = block.apply(x);

        long[] fullOut = c.output().fullShape(y.getShape().getShape(), size);
        Tensor fullW = Tensor.random(LOSS_WEIGHT_SEED, 1.0, fullOut);
        NDArray w = c.output().shard(fullW, rank, size).toNd(m);
        NDArray loss = y.mul(w).sum();
        ctx.tape().backward(loss);
        reducePartialGradients(block);
        Tensor inputGrad = c.tokenIds() != null ? null : Tensor.of(x.getGradient());
        return new RankRun(Tensor.of(y), inputGrad, gradients(block), loss.getFloat());
    }

    /** Runs {@code c} at TP=1 and at every size in {@code tps}, and asserts parity. */
    public static void assertParity(BlockCase c, int... tps) {
        RankRun reference = onRanks(1, ctx -> runBlock(ctx, c)).get(0);
        assertEveryGradientNonZero(reference);
        for (int tp : tps) {
            List<RankRun> runs = onRanks(tp, ctx -> runBlock(ctx, c));
            assertSameAsReference(reference, runs, c.input(), c.output(), "TP=" + tp);
        }
    }

    /** The re-assembled TP run matches the reference: output, input gradient, parameter gradients. */
    public static void assertSameAsReference(
            RankRun reference, List<RankRun> runs, Sharding input, Sharding output, String label) {
        Tensor out = output.assemble(runs.stream().map(RankRun::output).toList(), label + " output");
        assertThat(out.shape()).as("%s output shape", label).containsExactly(reference.output().shape());
        assertThat(maxAbsDiff(out.data(), reference.output().data()))
                .as("%s output max abs diff", label).isLessThanOrEqualTo(TOLERANCE);

        if (reference.inputGrad() != null) {
            Tensor gx = input.assemble(runs.stream().map(RankRun::inputGrad).toList(),
                    label + " input gradient");
            assertThat(gx.shape()).containsExactly(reference.inputGrad().shape());
            assertThat(relativeError(gx.data(), reference.inputGrad().data()))
                    .as("%s input gradient relative error", label).isLessThanOrEqualTo(TOLERANCE);
        }
        assertGradientsMatch(reference.grads(), runs.stream().map(RankRun::grads).toList(), label);
    }

    /** Every parameter gradient, re-assembled with {@link ShardedParameter#assemble}, matches. */
    public static void assertGradientsMatch(
            Map<String, Grad> reference, List<Map<String, Grad>> ranks, String label) {
        for (Map<String, Grad> r : ranks) {
            assertThat(r.keySet()).as("%s parameter names", label)
                    .containsExactlyElementsOf(reference.keySet());
        }
        try (NDManager m = NDManager.newBaseManager()) {
            for (Map.Entry<String, Grad> e : reference.entrySet()) {
                String name = e.getKey();
                ShardLayout layout = ranks.get(0).get(name).layout();
                List<Tensor> shards = ranks.stream().map(r -> r.get(name).value()).toList();
                Tensor full;
                if (layout == ShardLayout.REPLICATED) {
                    full = Sharding.REPLICATED.assemble(shards, label + " gradient of " + name);
                } else {
                    List<NDArray> nds = shards.stream().map(t -> t.toNd(m)).toList();
                    full = Tensor.of(ShardedParameter.assemble(layout, nds));
                }
                Tensor expected = e.getValue().value();
                assertThat(full.shape()).as("%s gradient shape of %s", label, name)
                        .containsExactly(expected.shape());
                assertThat(relativeError(full.data(), expected.data()))
                        .as("%s gradient of %s (relative error)", label, name)
                        .isLessThanOrEqualTo(TOLERANCE);
            }
        }
    }

    /** Guards the test itself: a parameter without gradient would compare trivially. */
    public static void assertEveryGradientNonZero(RankRun reference) {
        for (Map.Entry<String, Grad> e : reference.grads().entrySet()) {
            assertThat(maxAbs(e.getValue().value().data()))
                    .as("reference gradient of %s is non-zero", e.getKey()).isGreaterThan(0);
        }
        if (reference.inputGrad() != null) {
            assertThat(maxAbs(reference.inputGrad().data())).as("reference input gradient").isGreaterThan(0);
        }
    }
}
