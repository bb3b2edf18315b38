package org.djlmegatron.comm;

import org.djlmegatron.launch.DistributedWorld;
import org.djlmegatron.launch.LocalWorld;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.jni.JniUtils;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import org.djlmegatron.comm.Nodes.Outcome;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;
import org.junit.jupiter.api.Test;

/** Several nodes of one world, each a DistributedWorld in this JVM with its own sockets. */
class DistributedWorldTest {

    private static final Duration TIMEOUT = Duration.ofSeconds(20);

    @Test
    void everyCollectiveIsBitIdenticalToTheThreadBackend() {
        // 3 nodes x 2 ranks, tp 3: tp[0,1,2] and tp[3,4,5] mix local and remote members,
        // dp[0,3], dp[1,4], dp[2,5] span two nodes each
        RankGrid grid = RankGrid.create(6, 3, 1, 1, 1);
        Function<RankContext, Map<String, byte[]>> work = ctx -> {
            Map<String, byte[]> out = new java.util.LinkedHashMap<>();
            Workloads.everyCollective(ctx, GroupKind.TENSOR).forEach((k, v) -> out.put("tp " + k, v));
            Workloads.everyCollective(ctx, GroupKind.DATA).forEach((k, v) -> out.put("dp " + k, v));
            return out;
        };
        List<Map<String, byte[]>> local = LocalWorld.run(grid, TIMEOUT, work);
        List<Map<String, byte[]>> distributed = Nodes.allResults(Nodes.run(grid, 3, TIMEOUT, work));
        assertSameBytes(distributed, local);
        assertThat(local.get(0)).hasSizeGreaterThan(100);
    }

    @Test
    void theGroupTypesFollowWhereTheMembersLive() {
        RankGrid grid = RankGrid.create(4, 2, 1, 1, 1); // tp [0,1] [2,3] inside nodes, dp [0,2] [1,3] across
        List<String> out = Nodes.allResults(Nodes.run(grid, 2, TIMEOUT, ctx -> {
            ProcessGroup tp = ctx.tensorGroup();
            ProcessGroup dp = ctx.group(GroupKind.DATA);
            return Thread.currentThread().getName() + " " + JniUtils.isGradMode() + " "
                    + tp.getClass().getSimpleName() + " " + tp.name() + " " + dp.getClass().getSimpleName()
                    + " " + dp.name() + " " + dp.rank();
        }));
        assertThat(out).containsExactly(
                "rank-0 true ThreadProcessGroup tp[0,1] DistributedProcessGroup dp[0,2] 0",
                "rank-1 true ThreadProcessGroup tp[0,1] DistributedProcessGroup dp[1,3] 0",
                "rank-2 true ThreadProcessGroup tp[2,3] DistributedProcessGroup dp[0,2] 1",
                "rank-3 true ThreadProcessGroup tp[2,3] DistributedProcessGroup dp[1,3] 1");
    }

    @Test
    void trainingStepsGiveTheSameLossesAsOneJvm() {
        RankGrid grid = RankGrid.create(4, 2, 1, 1, 1);
        Function<RankContext, Map<String, byte[]>> work = ctx -> Workloads.trainingLike(ctx, 3);
        List<Map<String, byte[]>> local = LocalWorld.run(grid, TIMEOUT, work);
        assertSameBytes(Nodes.allResults(Nodes.run(grid, 2, TIMEOUT, work)), local);
        // tensor parallelism across the JVMs too
        RankGrid tp4 = RankGrid.create(4, 4, 1, 1, 1);
        assertSameBytes(Nodes.allResults(Nodes.run(tp4, 2, TIMEOUT, work)), LocalWorld.run(tp4, TIMEOUT, work));
    }

    @Test
    void everyGroupKindUnderLoadMatchesOneJvm() {
        RankGrid grid = RankGrid.create(8, 2, 2, 1, 2); // tp 2, pp 2, dp 2, ep 2
        Function<RankContext, double[]> work = ctx -> {
            double[] check = new double[30];
            for (int step = 0; step < check.length; step++) {
                try (NDManager m = ctx.manager().newSubManager()) {
                    NDArray x = m.arange(0f, 64f * 32f).reshape(64, 32).add(ctx.rank() * 0.37f + step).transpose();
                    NDArray a = ctx.group(GroupKind.TENSOR).allReduce(x, ReduceOp.SUM);
                    NDArray b = ctx.group(GroupKind.DATA).allGather(a, 1);
                    NDArray c = ctx.group(GroupKind.EXPERT).allToAll(b, 0, 1);
                    NDArray d = ctx.group(GroupKind.PIPELINE).reduceScatter(c, 0, ReduceOp.MAX);
                    NDArray e = ctx.group(GroupKind.MODEL).broadcast(d, step % 4);
                    NDArray f = ctx.group(GroupKind.DATA_CONTEXT).allReduce(e, ReduceOp.AVG);
                    NDArray g = ctx.group(GroupKind.EXPERT_DATA).allReduce(f.sin(), ReduceOp.SUM);
                    check[step] = g.sum().getFloat();
                }
            }
            return check;
        };
        List<double[]> local = LocalWorld.run(grid, TIMEOUT, work);
        List<double[]> fourNodes = Nodes.allResults(Nodes.run(grid, 4, TIMEOUT, work));
        List<double[]> twoNodes = Nodes.allResults(Nodes.run(grid, 2, TIMEOUT, work));
        for (int r = 0; r < 8; r++) {
            assertThat(fourNodes.get(r)).as("rank %d on 4 nodes", r).containsExactly(local.get(r));
            assertThat(twoNodes.get(r)).as("rank %d on 2 nodes", r).containsExactly(local.get(r));
        }
    }

    @Test
    void pointToPointAcrossNodesKeepsOrderAndChecksShapes() {
        RankGrid grid = RankGrid.create(4, 4, 1, 1, 1);
        List<float[]> out = Nodes.allResults(Nodes.run(grid, 2, TIMEOUT, ctx -> {
            ProcessGroup g = ctx.tensorGroup();
            int next = (g.rank() + 1) % 4;
            int prev = (g.rank() + 3) % 4;
            for (int k = 0; k < 5; k++) {
                g.send(ctx.manager().create(new float[] {g.rank(), k}), next); // eager: all send first
            }
            g.send(ctx.manager().create(new long[] {g.rank() * 10L}), prev);
            float[] got = new float[11];
            for (int k = 0; k < 5; k++) {
                float[] v = g.recv(ctx.manager(), new Shape(2), DataType.FLOAT32, prev).toFloatArray();
                got[2 * k] = v[0];
                got[2 * k + 1] = v[1];
            }
            got[10] = g.recv(ctx.manager(), new Shape(1), DataType.INT64, next).toLongArray()[0];
            return got;
        }));
        for (int r = 0; r < 4; r++) {
            int prev = (r + 3) % 4;
            assertThat(out.get(r)).containsExactly(prev, 0, prev, 1, prev, 2, prev, 3, prev, 4, ((r + 1) % 4) * 10f);
        }

        List<Outcome<Object>> wrong = Nodes.run(grid, 2, TIMEOUT, ctx -> {
            ProcessGroup g = ctx.tensorGroup();
            if (g.rank() == 0) {
                g.send(ctx.manager().zeros(new Shape(3)), 2);
            } else if (g.rank() == 2) {
                g.recv(ctx.manager(), new Shape(4), DataType.FLOAT32, 0);
            }
            return null;
        });
        assertThat(wrong.get(1).failure())
                .hasMessageContaining("group tp[0,1,2,3]: rank 2 (global 2) recv: expected float32 (4) from"
                        + " rank 0 (global 0) on node 0 (127.0.0.1:")
                .hasMessageContaining("but it sent float32 (3)");
        assertThat(wrong.get(0).failure()).hasMessageContaining("aborted: rank 2 failed");
    }

    @Test
    void aFailingRankOnOneNodeFailsEveryNodePromptly() {
        RankGrid grid = RankGrid.create(4, 2, 1, 1, 1);
        IllegalStateException boom = new IllegalStateException("boom");
        List<Outcome<Object>> outcomes = Nodes.run(grid, 2, Duration.ofSeconds(30), ctx -> {
            for (int step = 0; step < 100; step++) {
                if (ctx.rank() == 3 && step == 2) {
                    throw boom;
                }
                ctx.group(GroupKind.DATA).allReduce(ctx.manager().ones(new Shape(16)), ReduceOp.SUM).close();
                ctx.tensorGroup().barrier();
            }
            return null;
        });
        Throwable node0 = outcomes.get(0).failure();
        Throwable node1 = outcomes.get(1).failure();
        assertThat(node1).hasMessage("rank 3 failed: java.lang.IllegalStateException: boom");
        assertThat(node1.getCause()).isSameAs(boom);
        assertThat(node0).isInstanceOf(CollectiveException.class)
                .hasMessageMatching("node 1 \\(127\\.0\\.0\\.1:\\d+\\) aborted: rank 3 failed: "
                        + "java.lang.IllegalStateException: boom; rank [01] here was in group \\S+: rank \\d "
                        + "\\(global [01]\\) \\w+");
        // node 0's ranks were blocked in collectives and failed at once, naming the cause
        assertThat(node0.getSuppressed()).hasSize(2).allSatisfy(s -> assertThat(s.getCause())
                .isInstanceOf(CollectiveException.class)
                .hasMessageContaining("aborted: node 1 (127.0.0.1:"));
        for (Outcome<Object> o : outcomes) {
            assertThat(o.seconds()).isLessThan(10);
        }
    }

    @Test
    void aMissingRemoteMemberTimesOutNamingItsNode() {
        RankGrid grid = RankGrid.create(4, 2, 1, 1, 1);
        List<Outcome<Object>> outcomes = Nodes.run(grid, 2, Duration.ofMillis(800), ctx -> {
            if (ctx.rank() == 0) {
                ctx.group(GroupKind.DATA).allReduce(ctx.manager().ones(new Shape(1)), ReduceOp.SUM);
            }
            return null; // rank 2, rank 0's partner on node 1, never calls
        });
        assertThat(outcomes.get(0).failure())
                .hasMessageMatching("rank 0 failed: .*CollectiveException: group dp\\[0,2\\]: rank 0 \\(global 0\\)"
                        + " allReduce: timed out after 800 ms waiting for rank 1 \\(global 2\\) on node 1"
                        + " \\(127\\.0\\.0\\.1:\\d+\\)");
        // node 1 finished its ranks but learns that the job failed
        assertThat(outcomes.get(1).failure()).isInstanceOf(CollectiveException.class)
                .hasMessageContaining("node 0 (127.0.0.1:")
                .hasMessageContaining("aborted: rank 0 failed")
                .hasMessageContaining("waiting for rank 1 (global 2) on node 1");
    }

    @Test
    void mismatchedCallsAcrossNodesFailEveryMember() {
        RankGrid grid = RankGrid.create(4, 2, 1, 1, 1);
        List<Outcome<Object>> outcomes = Nodes.run(grid, 2, TIMEOUT, ctx -> {
            NDArray x = ctx.manager().ones(new Shape(2, 2));
            ProcessGroup dp = ctx.group(GroupKind.DATA);
            if (ctx.rank() == 0) {
                return dp.allReduce(x, ReduceOp.SUM);
            } else if (ctx.rank() == 2) {
                return dp.allGather(x, 0);
            }
            return null;
        });
        for (Outcome<Object> o : outcomes) {
            assertThat(o.failure()).isNotNull();
            String all = o.failure().getMessage() + Arrays.toString(o.failure().getSuppressed());
            assertThat(all).contains("members called different collectives")
                    .contains("allReduce(SUM) float32 (2, 2)")
                    .contains("allGather(axis=0) float32 (2, 2)");
        }
    }

    @Test
    void aNodeThatFinishesEarlyWaitsForTheOthers() {
        RankGrid grid = RankGrid.create(2, 1, 1, 1, 1);
        List<Outcome<Integer>> outcomes = Nodes.run(grid, 2, TIMEOUT, ctx -> {
            ctx.group(GroupKind.DATA).barrier();
            if (ctx.rank() == 1) {
                ThreadCollectivesTest.sleep(500); // no collectives any more: not a failure
            }
            return ctx.rank();
        });
        assertThat(outcomes.get(0).orThrow()).containsExactly(0);
        assertThat(outcomes.get(1).orThrow()).containsExactly(1);
        assertThat(outcomes.get(0).seconds()).isGreaterThan(0.4);
    }

    @Test
    void runsLeaveNothingInTheSystemManager() {
        RankGrid grid = RankGrid.create(4, 4, 1, 1, 1);
        long before = systemManagerResources();
        for (int i = 0; i < 3; i++) {
            Nodes.allResults(Nodes.run(grid, 2, TIMEOUT, ctx -> {
                NDArray x = ctx.manager().ones(new Shape(4, 4)).transpose();
                ProcessGroup g = ctx.tensorGroup();
                g.allReduce(x, ReduceOp.SUM);
                g.reduceScatter(x, 0, ReduceOp.SUM);
                g.allToAll(x, 0, 1);
                g.broadcast(x, 3);
                return g.allGather(x, 0).getShape().get(0);
            }));
        }
        assertThat(systemManagerResources()).isEqualTo(before);
    }

    @Test
    void theGridMustFitTheLaunch() {
        assertThatThrownBy(() -> DistributedWorld.run(RankGrid.create(4, 2, 1, 1, 1),
                        Nodes.launch(3, 2, 0, 29500, TIMEOUT), ctx -> null))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageStartingWith("the grid has 4 ranks but the launch has 2 node(s) x 3 ranks per node = 6");
    }

    static void assertSameBytes(List<Map<String, byte[]>> actual, List<Map<String, byte[]>> expected) {
        assertThat(actual).hasSameSizeAs(expected);
        for (int r = 0; r < expected.size(); r++) {
            assertThat(actual.get(r).keySet()).as("rank %d", r).containsExactlyElementsOf(expected.get(r).keySet());
            List<String> differ = new ArrayList<>();
            for (String key : expected.get(r).keySet()) {
                if (!Arrays.equals(actual.get(r).get(key), expected.get(r).get(key))) {
                    differ.add(key);
                }
            }
            assertThat(differ).as("results of rank %d that are not bit-identical", r).isEmpty();
        }
    }

    static long systemManagerResources() {
        try (NDManager m = NDManager.newBaseManager()) {
            String s = m.getParentManager().toString();
            return Long.parseLong(s.substring(s.lastIndexOf("Resource size: ") + 15).trim());
        }
    }
}
