package org.djlmegatron.comm;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;
import static org.djlmegatron.comm.ThreadCollectivesTest.catchRun;
import static org.djlmegatron.comm.ThreadCollectivesTest.create;
import static org.djlmegatron.comm.ThreadCollectivesTest.flat;
import static org.djlmegatron.comm.ThreadCollectivesTest.input;
import static org.djlmegatron.comm.ThreadCollectivesTest.rankFailures;
import static org.djlmegatron.comm.ThreadCollectivesTest.tensorOnly;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.Function;
import java.util.stream.Stream;
import org.djlmegatron.comm.Nodes.Outcome;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;

/** {@link ProcessGroup#reduce} on the thread backend and over TCP between nodes. */
class ReduceTest {

    private static final Duration TIMEOUT = Duration.ofSeconds(30);
    private static final List<ReduceOp> OPS = List.of(ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MAX, ReduceOp.MIN);

    static Stream<Arguments> sizesAndTypes() {
        List<Arguments> args = new ArrayList<>();
        for (int n : new int[] {1, 2, 3, 4}) {
            for (DataType t : new DataType[] {DataType.FLOAT32, DataType.FLOAT16, DataType.INT64}) {
                args.add(Arguments.of(n, t));
            }
        }
        return args.stream();
    }

    /** One rank's view of reduce(root, op) next to allReduce(op) of the same input. */
    record Seen(byte[] reduced, double[] values, byte[] allReduced, boolean ownManager, boolean requiresGrad) {}

    @ParameterizedTest(name = "group of {0}, {1}")
    @MethodSource("sizesAndTypes")
    void theRootGetsPlainArithmeticBitIdenticalToAllReduceAndTheOthersNull(int n, DataType type) {
        int cols = 3;
        List<Map<String, Seen>> perRank = LocalWorld.run(tensorOnly(n), TIMEOUT, ctx -> {
            ProcessGroup g = ctx.tensorGroup();
            NDArray x = create(ctx.manager(), input(ctx.rank(), cols, type), type);
            byte[] before = x.toByteArray();
            Map<String, Seen> out = new LinkedHashMap<>();
            for (int root = 0; root < n; root++) {
                for (ReduceOp op : OPS) {
                    NDArray y = g.reduce(x, root, op);
                    byte[] all = g.allReduce(x, op).toByteArray();
                    out.put(root + " " + op, y == null ? null : new Seen(y.toByteArray(),
                            y.toType(DataType.FLOAT64, true).toDoubleArray(), all,
                            y.getManager() == ctx.manager(), y.hasGradient()));
                }
            }
            assertThat(x.toByteArray()).as("input unchanged").isEqualTo(before);
            return out;
        });
        double[][][] in = new double[n][][];
        for (int r = 0; r < n; r++) {
            in[r] = input(r, cols, type);
        }
        for (int root = 0; root < n; root++) {
            for (ReduceOp op : OPS) {
                String key = root + " " + op;
                for (int r = 0; r < n; r++) {
                    Seen seen = perRank.get(r).get(key);
                    if (r != root) {
                        assertThat(seen).as("rank %d, not the root of %s", r, key).isNull();
                        continue;
                    }
                    assertThat(seen).as("root of %s", key).isNotNull();
                    assertThat(seen.reduced()).as("%s bit-identical to allReduce", key).isEqualTo(seen.allReduced());
                    assertThat(seen.ownManager()).as("%s attached to the caller's manager", key).isTrue();
                    assertThat(seen.requiresGrad()).isFalse();
                    double[] expected = flat(ThreadCollectivesTest.reduce(in, op, type));
                    if (op == ReduceOp.AVG && type.isFloating()) {
                        for (int i = 0; i < expected.length; i++) {
                            assertThat(seen.values()[i]).isCloseTo(expected[i], within(2e-3));
                        }
                    } else {
                        assertThat(seen.values()).as(key).containsExactly(expected);
                    }
                }
            }
        }
    }

    @Test
    void inexactFloatsAreSummedInGroupRankOrder() {
        int n = 4;
        int len = 1000;
        float[][] in = new float[n][len];
        Random random = new Random(43);
        for (float[] row : in) {
            for (int i = 0; i < len; i++) {
                row[i] = (float) (random.nextGaussian() * Math.pow(10, random.nextInt(7) - 3));
            }
        }
        List<byte[]> out = LocalWorld.run(tensorOnly(n), TIMEOUT, ctx -> {
            NDArray y = ctx.tensorGroup().reduce(ctx.manager().create(in[ctx.rank()]), 2, ReduceOp.SUM);
            return y == null ? null : y.toByteArray();
        });
        ByteBuffer expected = ByteBuffer.allocate(4 * len).order(ByteOrder.nativeOrder());
        for (int i = 0; i < len; i++) {
            float acc = in[0][i];
            for (int r = 1; r < n; r++) {
                acc += in[r][i]; // ((a0 + a1) + a2) + a3 in float32
            }
            expected.putFloat(acc);
        }
        assertThat(out.get(2)).isEqualTo(expected.array());
        assertThat(List.of(0, 1, 3)).allSatisfy(r -> assertThat(out.get(r)).isNull());
    }

    @Test
    void aRootOutsideTheGroupIsRejectedBeforeCommunicating() {
        LocalWorld.run(tensorOnly(3), TIMEOUT, ctx -> {
            ProcessGroup g = ctx.tensorGroup();
            NDArray x = ctx.manager().ones(new Shape(2));
            assertThatThrownBy(() -> g.reduce(x, 3, ReduceOp.SUM)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessage("group tp[0,1,2]: rank " + g.rank() + " (global " + g.rank()
                            + ") reduce: root 3 is outside the group of 3");
            assertThatThrownBy(() -> g.reduce(x, -1, ReduceOp.SUM)).hasMessageContaining("root -1 is outside");
            NDArray y = g.reduce(x, 1, ReduceOp.SUM); // still usable
            assertThat(y == null ? null : y.toFloatArray()).isEqualTo(g.rank() == 1 ? new float[] {3, 3} : null);
            return null;
        });
    }

    @Test
    void membersNamingDifferentRootsFailEveryMember() {
        Throwable thrown = catchRun(tensorOnly(2), TIMEOUT, ctx ->
                ctx.tensorGroup().reduce(ctx.manager().ones(new Shape(2, 3)), ctx.rank(), ReduceOp.SUM));
        assertThat(rankFailures(thrown)).hasSize(2).allSatisfy(t -> assertThat(t)
                .isInstanceOf(CollectiveException.class)
                .hasMessageContaining("members called different collectives (or shapes/dtypes) at call #0 of group tp[0,1]")
                .hasMessageContaining("rank 0 (global 0) reduce(root=0, SUM) float32 (2, 3)")
                .hasMessageContaining("rank 1 (global 1) reduce(root=1, SUM) float32 (2, 3)"));
    }

    @Test
    void mismatchedShapesOrTypesFailEveryMember() {
        Throwable shapes = catchRun(tensorOnly(3), TIMEOUT, ctx ->
                ctx.tensorGroup().reduce(ctx.manager().ones(new Shape(ctx.rank() == 2 ? 3 : 2)), 0, ReduceOp.MAX));
        assertThat(rankFailures(shapes)).hasSize(3).allSatisfy(t -> assertThat(t)
                .isInstanceOf(CollectiveException.class)
                .hasMessageContaining("rank 1 (global 1) reduce(root=0, MAX) float32 (2)")
                .hasMessageContaining("rank 2 (global 2) reduce(root=0, MAX) float32 (3)"));
        Throwable types = catchRun(tensorOnly(2), TIMEOUT, ctx -> ctx.tensorGroup().reduce(
                ctx.manager().ones(new Shape(2), ctx.rank() == 0 ? DataType.FLOAT32 : DataType.FLOAT64), 1,
                ReduceOp.SUM));
        assertThat(rankFailures(types)).hasSize(2).allSatisfy(t -> assertThat(t)
                .hasMessageContaining("rank 0 (global 0) reduce(root=1, SUM) float32 (2)")
                .hasMessageContaining("rank 1 (global 1) reduce(root=1, SUM) float64 (2)"));
    }

    /** Every member waits for every other to arrive (the root for their inputs, the others for the root to read them). */
    @ParameterizedTest(name = "member {0} never calls")
    @ValueSource(ints = {0, 2})
    void aMissingMemberTimesOutNamingIt(int missing) {
        Throwable thrown = catchRun(tensorOnly(3), Duration.ofMillis(2000), ctx -> {
            if (ctx.rank() == missing) {
                return null;
            }
            return ctx.tensorGroup().reduce(ctx.manager().ones(new Shape(1)), 0, ReduceOp.SUM);
        });
        assertThat(rankFailures(thrown)).hasSize(2).allSatisfy(t -> assertThat(t)
                .isInstanceOf(CollectiveException.class)
                .hasMessageContaining("group tp[0,1,2]")
                .hasMessageContaining("reduce")
                .hasMessageContaining("timed out after 2000 ms waiting for rank " + missing + " (global " + missing + ")"));
        // the member that timed out first says so; the other may report the abort that caused
        assertThat(rankFailures(thrown)).anySatisfy(t -> assertThat(t.getMessage())
                .matches("group tp\\[0,1,2\\]: rank [012] \\(global [012]\\) reduce: timed out after 2000 ms"
                        + " waiting for rank " + missing + " \\(global " + missing + "\\)"));
    }

    /** A group from elsewhere that implements only the abstract methods, by delegation. */
    record ThirdParty(ProcessGroup g) implements ProcessGroup {
        public String name() {
            return g.name();
        }

        public int size() {
            return g.size();
        }

        public int rank() {
            return g.rank();
        }

        public int[] globalRanks() {
            return g.globalRanks();
        }

        public NDArray allReduce(NDArray x, ReduceOp op) {
            return g.allReduce(x, op);
        }

        public NDArray allGather(NDArray x, int axis) {
            return g.allGather(x, axis);
        }

        public NDArray reduceScatter(NDArray x, int axis, ReduceOp op) {
            return g.reduceScatter(x, axis, op);
        }

        public NDArray broadcast(NDArray x, int root) {
            return g.broadcast(x, root);
        }

        public NDArray allToAll(NDArray x, int splitAxis, int concatAxis) {
            return g.allToAll(x, splitAxis, concatAxis);
        }

        public void send(NDArray x, int dst) {
            g.send(x, dst);
        }

        public NDArray recv(NDManager manager, Shape shape, DataType dataType, int src) {
            return g.recv(manager, shape, dataType, src);
        }

        public void barrier() {
            g.barrier();
        }
    }

    @Test
    void theInterfacesDefaultKeepsTheContractOnAllReduce() {
        List<float[]> out = LocalWorld.run(tensorOnly(3), TIMEOUT, ctx -> {
            ProcessGroup g = new ThirdParty(ctx.tensorGroup());
            NDArray x = ctx.manager().create(new float[] {ctx.rank(), 1});
            assertThatThrownBy(() -> g.reduce(x, 3, ReduceOp.SUM))
                    .hasMessage("group tp[0,1,2]: rank " + ctx.rank() + " (global " + ctx.rank()
                            + ") reduce: root 3 is outside the group of 3");
            NDArray y = g.reduce(x, 1, ReduceOp.MAX);
            return y == null ? null : y.toFloatArray();
        });
        assertThat(out.get(0)).isNull();
        assertThat(out.get(1)).containsExactly(2, 1);
        assertThat(out.get(2)).isNull();
    }

    @Test
    void overTcpEachNodeSendsOnlyToTheRootsNode() {
        // 3 nodes, one member of the group each
        int[] nodes = {0, 1, 2};
        NodeMesh mesh = new NodeMesh(0, new Socket[3], new String[] {"self", "a:1", "b:2"});
        GroupCommunicator comm = new GroupCommunicator("dp[0,1,2]", new int[] {0, 1, 2}, TIMEOUT, 7, nodes, 0, mesh);
        try (NDManager m = NDManager.newBaseManager()) {
            NDArray x = m.create(new float[] {1, 2, 3});
            var toRootsNode = comm.outgoing(new Collective.Reduce(2, ReduceOp.SUM), x, 0);
            assertThat(toRootsNode.keySet()).containsExactly(1, 2);
            assertThat(toRootsNode.get(1)).as("node 1 holds no root: the signature only").isEmpty();
            assertThat(toRootsNode.get(2)).hasSize(1);
            assertThat(toRootsNode.get(2).get(0).receiver()).isEqualTo(2);
            assertThat(toRootsNode.get(2).get(0).tensor().describe()).isEqualTo("float32 (3)");
            // the allReduce of the same input goes to both
            var toAll = comm.outgoing(new Collective.AllReduce(ReduceOp.SUM), x, 0);
            assertThat(toAll.get(1)).hasSize(1);
            assertThat(toAll.get(2)).hasSize(1);
        }
    }

    @Test
    void acrossNodesItIsBitIdenticalToOneJvm() {
        // 3 nodes x 2 ranks, tp 3: tp[0,1,2] and tp[3,4,5] mix local and remote members,
        // dp[0,3], dp[1,4], dp[2,5] span two nodes each
        RankGrid grid = RankGrid.create(6, 3, 1, 1, 1);
        Function<RankContext, Map<String, byte[]>> work = ctx -> {
            Map<String, byte[]> out = new LinkedHashMap<>();
            for (GroupKind kind : List.of(GroupKind.TENSOR, GroupKind.DATA)) {
                ProcessGroup g = ctx.group(kind);
                for (DataType type : List.of(DataType.FLOAT32, DataType.FLOAT16, DataType.INT32)) {
                    NDArray x = Workloads.random(ctx.manager(), ctx.rank() * 13 + type.ordinal(), new Shape(3, 4), type);
                    NDArray strided = x.transpose();
                    for (int root = 0; root < g.size(); root++) {
                        for (ReduceOp op : OPS) {
                            NDArray y = g.reduce(root % 2 == 0 ? x : strided, root, op);
                            assertThat(y == null).as("null exactly off the root").isEqualTo(g.rank() != root);
                            out.put(kind + " " + type + " " + root + " " + op,
                                    y == null ? new byte[0] : y.toByteArray());
                        }
                    }
                }
            }
            return out;
        };
        List<Map<String, byte[]>> local = LocalWorld.run(grid, TIMEOUT, work);
        List<Map<String, byte[]>> distributed = Nodes.allResults(Nodes.run(grid, 3, TIMEOUT, work));
        DistributedWorldTest.assertSameBytes(distributed, local);
        assertThat(local.get(0)).hasSize(3 * 4 * 3 + 2 * 4 * 3); // tp: 3 roots, dp: 2 roots; 4 ops, 3 dtypes
    }

    @Test
    void aRemoteRootThatNeverCallsTimesOutNamingItsNode() {
        RankGrid grid = RankGrid.create(4, 2, 1, 1, 1); // dp[0,2]: rank 0 on node 0, rank 2 on node 1
        List<Outcome<Object>> outcomes = Nodes.run(grid, 2, Duration.ofMillis(2000), ctx -> {
            if (ctx.rank() == 0) {
                ctx.group(GroupKind.DATA).reduce(ctx.manager().ones(new Shape(1)), 1, ReduceOp.SUM);
            }
            return null; // rank 2, the root on node 1, never calls
        });
        assertThat(outcomes.get(0).failure())
                .hasMessageMatching("rank 0 failed: .*CollectiveException: group dp\\[0,2\\]: rank 0 \\(global 0\\)"
                        + " reduce: timed out after 2000 ms waiting for rank 1 \\(global 2\\) on node 1"
                        + " \\(127\\.0\\.0\\.1:\\d+\\)");
    }
}
