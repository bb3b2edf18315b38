package org.djlmegatron.comm;

import org.djlmegatron.launch.LocalWorld;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Function;
import java.util.stream.Stream;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

class ThreadCollectivesTest {

    private static final Duration TIMEOUT = Duration.ofSeconds(20);
    private static final int ROWS = 2;

    /** A collective's result as seen by one rank, copied out of DJL. */
    record Result(long[] shape, double[] values, byte[] raw, boolean ownManager, boolean requiresGrad) {}

    /** Every group member's input: small integers (times 0.5 for floats), exact in every dtype. */
    static double[][] input(int rank, int cols, DataType type) {
        double[][] v = new double[ROWS][cols];
        for (int i = 0; i < ROWS; i++) {
            for (int j = 0; j < cols; j++) {
                int k = (rank * 7 + (i * cols + j) * 3) % 11 - 5;
                v[i][j] = type.isFloating() ? k * 0.5 : k;
            }
        }
        return v;
    }

    static NDArray create(NDManager m, double[][] v, DataType type) {
        double[] flat = Stream.of(v).flatMapToDouble(Arrays::stream).toArray();
        NDArray d = m.create(flat, new Shape(v.length, v[0].length));
        // not toType(type, true) + close: on PyTorch that aliases d when the type is unchanged,
        // and closing d releases the Java buffer both point into
        return type == DataType.FLOAT64 ? d : d.toType(type, false);
    }

    static Result result(NDArray y, RankContext ctx) {
        try (NDArray d = y.toType(DataType.FLOAT64, true)) {
            return new Result(y.getShape().getShape(), d.toDoubleArray(), y.toByteArray(),
                    y.getManager() == ctx.manager(), y.hasGradient());
        }
    }

    static RankGrid tensorOnly(int n) {
        return RankGrid.create(n, n, 1, 1, 1);
    }

    static Stream<Arguments> sizesAndTypes() {
        List<Arguments> args = new ArrayList<>();
        for (int n : new int[] {2, 3, 4}) {
            for (DataType t : new DataType[] {
                DataType.FLOAT32, DataType.FLOAT16, DataType.FLOAT64, DataType.INT32, DataType.INT64
            }) {
                args.add(Arguments.of(n, t));
            }
        }
        return args.stream();
    }

    @ParameterizedTest(name = "group of {0}, {1}")
    @MethodSource("sizesAndTypes")
    void everyCollectiveMatchesPlainJava(int n, DataType type) {
        int cols = 2 * n; // divisible by n for reduceScatter / allToAll
        List<Map<String, Result>> perRank = LocalWorld.run(tensorOnly(n), TIMEOUT, ctx -> {
            ProcessGroup g = ctx.tensorGroup();
            NDArray x = create(ctx.manager(), input(ctx.rank(), cols, type), type);
            byte[] before = x.toByteArray();
            Map<String, Result> out = new LinkedHashMap<>();
            for (ReduceOp op : ReduceOp.values()) {
                out.put("allReduce " + op, result(g.allReduce(x, op), ctx));
            }
            out.put("allGather 0", result(g.allGather(x, 0), ctx));
            out.put("allGather 1", result(g.allGather(x, -1), ctx));
            out.put("reduceScatter SUM", result(g.reduceScatter(x, 1, ReduceOp.SUM), ctx));
            out.put("reduceScatter MAX", result(g.reduceScatter(x, 1, ReduceOp.MAX), ctx));
            out.put("broadcast", result(g.broadcast(x, n - 1), ctx));
            out.put("allToAll", result(g.allToAll(x, 1, 0), ctx));
            g.barrier();
            assertThat(x.toByteArray()).as("input unchanged").isEqualTo(before);
            return out;
        });

        double[][][] in = new double[n][][];
        for (int r = 0; r < n; r++) {
            in[r] = input(r, cols, type);
        }
        for (int r = 0; r < n; r++) {
            Map<String, Result> got = perRank.get(r);
            for (ReduceOp op : ReduceOp.values()) {
                Result res = got.get("allReduce " + op);
                assertThat(res.shape()).containsExactly(ROWS, cols);
                double[] expected = flat(reduce(in, op, type));
                if (op == ReduceOp.AVG && type.isFloating()) {
                    double tol = type == DataType.FLOAT16 ? 2e-3 : 1e-6;
                    for (int i = 0; i < expected.length; i++) {
                        assertThat(res.values()[i]).isCloseTo(expected[i], within(tol));
                    }
                } else {
                    assertThat(res.values()).as("allReduce %s", op).containsExactly(expected);
                }
            }
            assertThat(got.get("allGather 0").shape()).containsExactly((long) ROWS * n, cols);
            assertThat(got.get("allGather 0").values()).containsExactly(flat(concatRows(in)));
            assertThat(got.get("allGather 1").shape()).containsExactly(ROWS, (long) cols * n);
            assertThat(got.get("allGather 1").values()).containsExactly(flat(concatCols(in)));

            double[][] sum = reduce(in, ReduceOp.SUM, type);
            double[][] max = reduce(in, ReduceOp.MAX, type);
            assertThat(got.get("reduceScatter SUM").shape()).containsExactly(ROWS, 2);
            assertThat(got.get("reduceScatter SUM").values()).containsExactly(flat(columns(sum, 2 * r, 2)));
            assertThat(got.get("reduceScatter MAX").values()).containsExactly(flat(columns(max, 2 * r, 2)));

            assertThat(got.get("broadcast").values()).containsExactly(flat(in[n - 1]));

            // rank r receives chunk r (columns 2r, 2r+1) of every member, stacked along rows
            double[][][] received = new double[n][][];
            for (int j = 0; j < n; j++) {
                received[j] = columns(in[j], 2 * r, 2);
            }
            assertThat(got.get("allToAll").shape()).containsExactly((long) ROWS * n, 2);
            assertThat(got.get("allToAll").values()).containsExactly(flat(concatRows(received)));

            for (Map.Entry<String, Result> e : got.entrySet()) {
                assertThat(e.getValue().ownManager()).as("%s attached to the caller's manager", e.getKey()).isTrue();
                assertThat(e.getValue().requiresGrad()).as("%s requires grad", e.getKey()).isFalse();
            }
        }
        // reductions, gathers and broadcasts are bit-identical on every member
        for (String key : List.of("allReduce SUM", "allReduce AVG", "allReduce MAX", "allReduce MIN",
                "allGather 0", "allGather 1", "broadcast")) {
            for (int r = 1; r < n; r++) {
                assertThat(perRank.get(r).get(key).raw()).as(key).isEqualTo(perRank.get(0).get(key).raw());
            }
        }
    }

    @Test
    void sumOfInexactFloatsFollowsGroupRankOrderOnEveryMember() {
        int n = 4;
        int len = 1000;
        float[][] in = new float[n][len];
        Random random = new Random(42);
        for (float[] row : in) {
            for (int i = 0; i < len; i++) {
                row[i] = (float) (random.nextGaussian() * Math.pow(10, random.nextInt(7) - 3));
            }
        }
        List<byte[]> out = LocalWorld.run(tensorOnly(n), TIMEOUT, ctx -> ctx.tensorGroup()
                .allReduce(ctx.manager().create(in[ctx.rank()]), ReduceOp.SUM)
                .toByteArray());
        // ((a0 + a1) + a2) + a3 in float32, the order the contract promises
        float[] expected = new float[len];
        for (int i = 0; i < len; i++) {
            float acc = in[0][i];
            for (int r = 1; r < n; r++) {
                acc += in[r][i];
            }
            expected[i] = acc;
        }
        ByteBuffer bb = ByteBuffer.allocate(4 * len).order(ByteOrder.nativeOrder());
        for (float f : expected) {
            bb.putFloat(f);
        }
        for (byte[] got : out) {
            assertThat(got).isEqualTo(bb.array());
        }
    }

    @Test
    void avgOfIntegersTruncatesTowardZero() {
        List<long[]> out = LocalWorld.run(tensorOnly(4), TIMEOUT, ctx -> {
            // sums: -7 and 7 over 4 members
            long[] v = ctx.rank() < 3 ? new long[] {-2, 2} : new long[] {-1, 1};
            NDArray x = ctx.manager().create(v);
            NDArray y = ctx.tensorGroup().allReduce(x, ReduceOp.AVG);
            assertThat(y.getDataType()).isEqualTo(DataType.INT64);
            return y.toLongArray();
        });
        out.forEach(v -> assertThat(v).containsExactly(-1, 1));
    }

    @Test
    void resultsDoNotRequireGradientAndInputsKeepTheirs() {
        LocalWorld.run(tensorOnly(2), TIMEOUT, ctx -> {
            NDArray w = ctx.manager().create(new float[] {1, 2, 3, 4});
            w.setRequiresGradient(true);
            NDArray y = ctx.tensorGroup().allReduce(w, ReduceOp.SUM);
            assertThat(y.hasGradient()).isFalse();
            assertThat(w.hasGradient()).isTrue();
            assertThat(y.toFloatArray()).containsExactly(2, 4, 6, 8);
            return null;
        });
    }

    @Test
    void sendAndRecvMatchByOrderBetweenPairs() {
        int n = 4;
        List<List<float[]>> out = LocalWorld.run(tensorOnly(n), TIMEOUT, ctx -> {
            ProcessGroup g = ctx.tensorGroup();
            int next = (g.rank() + 1) % n;
            int prev = (g.rank() + n - 1) % n;
            // everybody sends first: the eager send must not deadlock the ring
            for (int k = 0; k < 3; k++) {
                NDArray x = ctx.manager().create(new float[] {g.rank(), k});
                g.send(x, next);
                x.set(new float[] {-1, -1}); // reusing x after send must not change the message
            }
            List<float[]> got = new ArrayList<>();
            for (int k = 0; k < 3; k++) {
                NDArray y = g.recv(ctx.manager(), new Shape(2), DataType.FLOAT32, prev);
                assertThat(y.getManager()).isSameAs(ctx.manager());
                got.add(y.toFloatArray());
            }
            // a second pair exchange with another dtype, back the other way
            NDArray ints = ctx.manager().create(new long[] {g.rank() * 10L});
            g.send(ints, prev);
            NDArray back = g.recv(ctx.manager(), new Shape(1), DataType.INT64, next);
            got.add(new float[] {back.toLongArray()[0]});
            return got;
        });
        for (int r = 0; r < n; r++) {
            int prev = (r + n - 1) % n;
            int next = (r + 1) % n;
            List<float[]> got = out.get(r);
            for (int k = 0; k < 3; k++) {
                assertThat(got.get(k)).containsExactly(prev, k);
            }
            assertThat(got.get(3)).containsExactly(next * 10f);
        }
    }

    @Test
    void recvOfTheWrongShapeFailsNamingBothSides() {
        assertThatThrownBy(() -> LocalWorld.run(tensorOnly(2), TIMEOUT, ctx -> {
                    ProcessGroup g = ctx.tensorGroup();
                    if (g.rank() == 0) {
                        g.send(ctx.manager().zeros(new Shape(3)), 1);
                    } else {
                        g.recv(ctx.manager(), new Shape(4), DataType.FLOAT32, 0);
                    }
                    return null;
                }))
                .hasRootCauseInstanceOf(CollectiveException.class)
                .rootCause()
                .hasMessageContaining("group tp[0,1]: rank 1 (global 1) recv")
                .hasMessageContaining("expected float32 (4)")
                .hasMessageContaining("rank 0 (global 0) but it sent float32 (3)");
    }

    @Test
    void tensorAndDataGroupsOfA2x2GridRunConcurrently() {
        RankGrid grid = RankGrid.create(4, 2, 1, 1, 1); // tp [0,1] [2,3]; dp [0,2] [1,3]
        List<double[]> out = LocalWorld.run(grid, TIMEOUT, ctx -> {
            double[] acc = new double[20];
            for (int step = 0; step < 20; step++) {
                NDArray x = ctx.manager().create(new float[] {ctx.rank() + step});
                try (NDArray tp = ctx.group(GroupKind.TENSOR).allReduce(x, ReduceOp.SUM);
                        NDArray dp = ctx.group(GroupKind.DATA).allReduce(tp, ReduceOp.MAX);
                        NDArray all = ctx.group(GroupKind.DATA_CONTEXT).allGather(dp, 0)) {
                    acc[step] = all.sum().getFloat();
                }
                x.close();
            }
            return acc;
        });
        for (int step = 0; step < 20; step++) {
            // tp sums: (0+1+2s) and (2+3+2s); dp max: 5 + 2s on every rank; gather of 2 such
            double expected = 2 * (5 + 2 * step);
            for (double[] rank : out) {
                assertThat(rank[step]).isEqualTo(expected);
            }
        }
    }

    @Test
    void sizeOneGroupReturnsCopies() {
        LocalWorld.run(RankGrid.single(), TIMEOUT, ctx -> {
            ProcessGroup g = ctx.tensorGroup();
            NDArray x = ctx.manager().create(new float[] {1, 2, 3});
            for (NDArray y : List.of(g.allReduce(x, ReduceOp.AVG), g.allGather(x, 0),
                    g.reduceScatter(x, 0, ReduceOp.SUM), g.broadcast(x, 0), g.allToAll(x, 0, 0))) {
                assertThat(y).isNotSameAs(x);
                assertThat(y.getManager()).isSameAs(ctx.manager());
                assertThat(y.toFloatArray()).containsExactly(1, 2, 3);
                y.set(new float[] {0, 0, 0});
            }
            g.barrier();
            assertThat(x.toFloatArray()).containsExactly(1, 2, 3);
            return null;
        });
    }

    @Test
    void barrierHoldsEveryoneUntilTheLastArrives() {
        AtomicLong lastArrival = new AtomicLong();
        List<Long> left = LocalWorld.run(tensorOnly(3), TIMEOUT, ctx -> {
            sleep(60L * ctx.rank());
            lastArrival.accumulateAndGet(System.nanoTime(), Math::max);
            ctx.tensorGroup().barrier();
            return System.nanoTime();
        });
        left.forEach(t -> assertThat(t).isGreaterThanOrEqualTo(lastArrival.get()));
    }

    @Test
    void mismatchedOperationsFailEveryMember() {
        Throwable thrown = catchRun(tensorOnly(2), TIMEOUT, ctx -> {
            NDArray x = ctx.manager().ones(new Shape(2, 2));
            ProcessGroup g = ctx.tensorGroup();
            return g.rank() == 0 ? g.allReduce(x, ReduceOp.SUM) : g.allGather(x, 0);
        });
        List<Throwable> all = rankFailures(thrown);
        assertThat(all).hasSize(2);
        for (Throwable t : all) {
            assertThat(t).isInstanceOf(CollectiveException.class)
                    .hasMessageContaining("tp[0,1]")
                    .hasMessageContaining("rank 0 (global 0) allReduce(SUM) float32 (2, 2)")
                    .hasMessageContaining("rank 1 (global 1) allGather(axis=0) float32 (2, 2)");
        }
    }

    @Test
    void mismatchedShapesFailEveryMember() {
        Throwable thrown = catchRun(tensorOnly(3), TIMEOUT, ctx -> {
            NDArray x = ctx.manager().ones(new Shape(ctx.rank() == 2 ? 3 : 2));
            return ctx.tensorGroup().allReduce(x, ReduceOp.SUM);
        });
        List<Throwable> all = rankFailures(thrown);
        assertThat(all).hasSize(3).allSatisfy(t -> assertThat(t)
                .hasMessageContaining("rank 1 (global 1) allReduce(SUM) float32 (2)")
                .hasMessageContaining("rank 2 (global 2) allReduce(SUM) float32 (3)"));
    }

    @Test
    void aFailingRankReleasesTheOthersPromptly() {
        long start = System.nanoTime();
        IllegalStateException boom = new IllegalStateException("boom");
        Throwable thrown = catchRun(tensorOnly(4), Duration.ofSeconds(60), ctx -> {
            if (ctx.rank() == 2) {
                sleep(100);
                throw boom;
            }
            return ctx.tensorGroup().allReduce(ctx.manager().ones(new Shape(4)), ReduceOp.SUM);
        });
        double seconds = (System.nanoTime() - start) / 1e9;
        assertThat(seconds).as("seconds, far below the timeout or a hang").isLessThan(20);
        assertThat(thrown).hasMessageStartingWith("rank 2 failed").hasCause(boom);
        assertThat(thrown.getCause()).isSameAs(boom);
        assertThat(thrown.getSuppressed()).hasSize(3).allSatisfy(s -> assertThat(s.getCause())
                .isInstanceOf(CollectiveException.class)
                .hasMessageContaining("aborted")
                .hasMessageContaining("rank 2 failed: java.lang.IllegalStateException: boom"));
    }

    @Test
    void aMissingRankTimesOutNamingIt() {
        long start = System.nanoTime();
        Throwable thrown = catchRun(tensorOnly(3), Duration.ofMillis(300), ctx -> {
            if (ctx.rank() == 2) {
                return null; // never joins
            }
            return ctx.tensorGroup().allReduce(ctx.manager().ones(new Shape(1)), ReduceOp.SUM);
        });
        double seconds = (System.nanoTime() - start) / 1e9;
        assertThat(seconds).as("seconds, far below the timeout or a hang").isLessThan(20);
        List<Throwable> all = rankFailures(thrown);
        assertThat(all).hasSize(2).allSatisfy(t -> assertThat(t)
                .isInstanceOf(CollectiveException.class)
                .hasMessageContaining("group tp[0,1,2]")
                .hasMessageContaining("allReduce")
                .hasMessageContaining("timed out after 300 ms waiting for rank 2 (global 2)"));
        assertThat(thrown.getCause().getMessage()).matches("group tp\\[0,1,2\\]: rank [01] \\(global [01]\\) allReduce: .*");
    }

    @Test
    void recvTimesOutNamingTheSender() {
        Throwable thrown = catchRun(tensorOnly(2), Duration.ofMillis(200), ctx -> {
            if (ctx.rank() == 1) {
                ctx.tensorGroup().recv(ctx.manager(), new Shape(1), DataType.FLOAT32, 0);
            }
            return null;
        });
        assertThat(thrown.getCause()).isInstanceOf(CollectiveException.class)
                .hasMessage("group tp[0,1]: rank 1 (global 1) recv: timed out after 200 ms"
                        + " waiting for a message from rank 0 (global 0)");
    }

    @Test
    void badArgumentsAreRejectedBeforeCommunicating() {
        LocalWorld.run(tensorOnly(3), TIMEOUT, ctx -> {
            ProcessGroup g = ctx.tensorGroup();
            NDArray x = ctx.manager().ones(new Shape(2, 4));
            assertThatThrownBy(() -> g.reduceScatter(x, 1, ReduceOp.SUM))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("length 4, not divisible by the group size 3");
            assertThatThrownBy(() -> g.allGather(x, 2)).hasMessageContaining("axis 2 is out of range");
            assertThatThrownBy(() -> g.broadcast(x, 3)).hasMessageContaining("root 3 is outside");
            assertThatThrownBy(() -> g.send(x, g.rank())).hasMessageContaining("must be another member");
            // the group is still usable afterwards
            assertThat(g.allReduce(x, ReduceOp.SUM).getFloat(0, 0)).isEqualTo(3f);
            return null;
        });
    }

    @Test
    void anAbortedGroupFailsLaterCallsAtOnce() {
        List<ThreadProcessGroup> members = ThreadProcessGroup.newGroup("g[0,1]", new int[] {0, 1}, TIMEOUT);
        members.get(0).abort("stopped by test");
        try (NDManager m = NDManager.newBaseManager()) {
            assertThatThrownBy(() -> members.get(1).allReduce(m.ones(new Shape(1)), ReduceOp.SUM))
                    .isInstanceOf(CollectiveException.class)
                    .hasMessage("group g[0,1]: rank 1 (global 1) allReduce: aborted: stopped by test");
            assertThatThrownBy(() -> members.get(0).send(m.ones(new Shape(1)), 1))
                    .hasMessageContaining("aborted: stopped by test");
        }
    }

    @Test
    void stressEightRanksOnAllGroupKindsWithNonContiguousInputs() {
        RankGrid grid = RankGrid.create(8, 2, 2, 1, 2); // tp 2, pp 2, dp 2, ep 2
        Function<RankContext, Double> work = ctx -> {
            double check = 0;
            for (int step = 0; step < 40; step++) {
                try (NDManager m = ctx.manager().newSubManager()) {
                    // a transposed (non-contiguous) view as input
                    NDArray x = m.arange(0f, 64f * 32f).reshape(64, 32).add(ctx.rank()).transpose();
                    NDArray a = ctx.group(GroupKind.TENSOR).allReduce(x, ReduceOp.SUM);
                    NDArray b = ctx.group(GroupKind.DATA).allGather(a, 1);
                    NDArray c = ctx.group(GroupKind.EXPERT).allToAll(b, 0, 1);
                    NDArray d = ctx.group(GroupKind.PIPELINE).reduceScatter(c, 0, ReduceOp.MAX);
                    NDArray e = ctx.group(GroupKind.MODEL).broadcast(d, step % 4);
                    assertThat(a.getManager()).isSameAs(m);
                    assertThat(e.getManager()).isSameAs(m);
                    check += e.sum().getFloat();
                }
            }
            return check;
        };
        List<Double> out = LocalWorld.run(grid, TIMEOUT, work);
        // the last step broadcasts over the model-parallel group: equal inside it
        for (int r = 0; r < 8; r++) {
            assertThat(out.get(r)).isEqualTo(out.get(grid.group(GroupKind.MODEL, r)[0]));
        }
        assertThat(out.get(0)).isNotEqualTo(out.get(2)); // [0,1,4,5] and [2,3,6,7] differ
        // and a race would show up as a run that does not reproduce
        assertThat(LocalWorld.run(grid, TIMEOUT, work)).isEqualTo(out);
    }

    @Test
    void failuresAtRandomStepsNeverHangOrCrash() {
        RankGrid grid = RankGrid.create(4, 2, 1, 1, 1);
        Random random = new Random(7);
        for (int trial = 0; trial < 15; trial++) {
            int victim = random.nextInt(4);
            int failAt = random.nextInt(6);
            long start = System.nanoTime();
            Throwable thrown = catchRun(grid, Duration.ofSeconds(30), ctx -> {
                for (int step = 0; step < 6; step++) {
                    if (ctx.rank() == victim && step == failAt) {
                        throw new IllegalStateException("injected at " + step);
                    }
                    // backed by a Java buffer (1 MB, so freed memory would be unmapped at once)
                    NDArray x = ctx.manager().create(new float[256 * 1024], new Shape(512, 512));
                    ctx.tensorGroup().allGather(x, 0).close();
                    ctx.group(GroupKind.DATA).allReduce(x, ReduceOp.SUM).close();
                    x.close();
                }
                return null;
            });
            assertThat((System.nanoTime() - start) / 1e9).as("seconds, below the 30 s timeout").isLessThan(15);
            assertThat(thrown).hasMessageStartingWith("rank " + victim + " failed")
                    .hasCauseInstanceOf(IllegalStateException.class);
        }
    }

    // ---- plain-Java reference implementations ----

    static double[][] reduce(double[][][] in, ReduceOp op, DataType type) {
        double[][] out = new double[ROWS][in[0][0].length];
        for (int i = 0; i < ROWS; i++) {
            for (int j = 0; j < out[i].length; j++) {
                double acc = in[0][i][j];
                for (int r = 1; r < in.length; r++) {
                    double v = in[r][i][j];
                    acc = switch (op) {
                        case SUM, AVG -> acc + v;
                        case MAX -> Math.max(acc, v);
                        case MIN -> Math.min(acc, v);
                    };
                }
                if (op == ReduceOp.AVG) {
                    acc = type.isFloating() ? acc / in.length : (long) acc / in.length;
                }
                out[i][j] = acc;
            }
        }
        return out;
    }

    static double[][] concatRows(double[][][] parts) {
        return Stream.of(parts).flatMap(Stream::of).toArray(double[][]::new);
    }

    static double[][] concatCols(double[][][] parts) {
        double[][] out = new double[parts[0].length][];
        for (int i = 0; i < out.length; i++) {
            int row = i;
            out[i] = Stream.of(parts).flatMapToDouble(p -> Arrays.stream(p[row])).toArray();
        }
        return out;
    }

    static double[][] columns(double[][] v, int from, int count) {
        double[][] out = new double[v.length][];
        for (int i = 0; i < v.length; i++) {
            out[i] = Arrays.copyOfRange(v[i], from, from + count);
        }
        return out;
    }

    static double[] flat(double[][] v) {
        return Stream.of(v).flatMapToDouble(Arrays::stream).toArray();
    }

    // ---- helpers ----

    static Throwable catchRun(RankGrid grid, Duration timeout, Function<RankContext, ?> body) {
        try {
            LocalWorld.run(grid, timeout, body);
        } catch (RuntimeException e) {
            return e;
        }
        throw new AssertionError("expected LocalWorld.run to fail");
    }

    /** The original exception of every failed rank: the cause, then the suppressed ones' causes. */
    static List<Throwable> rankFailures(Throwable thrown) {
        List<Throwable> all = new ArrayList<>();
        all.add(thrown.getCause());
        for (Throwable s : thrown.getSuppressed()) {
            all.add(s.getCause());
        }
        return all;
    }

    static void sleep(long millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }
}
