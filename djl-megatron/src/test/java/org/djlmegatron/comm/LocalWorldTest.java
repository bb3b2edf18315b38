package org.djlmegatron.comm;

import org.djlmegatron.launch.LocalWorld;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.Device;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.jni.JniUtils;
import java.time.Duration;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankGrid;
import org.junit.jupiter.api.Test;

class LocalWorldTest {

    private static final Duration TIMEOUT = Duration.ofSeconds(20);

    record RankInfo(int rank, String thread, boolean gradMode, Device device, NDManager manager) {}

    @Test
    void runsOneThreadPerRankAndReturnsResultsInRankOrder() {
        RankGrid grid = RankGrid.create(4, 2, 2, 1, 1);
        List<RankInfo> out = LocalWorld.run(grid, ctx -> {
            ThreadCollectivesTest.sleep(10L * (3 - ctx.rank())); // finish in reverse order
            return new RankInfo(ctx.rank(), Thread.currentThread().getName(), JniUtils.isGradMode(),
                    ctx.manager().getDevice(), ctx.manager());
        });
        assertThat(out).hasSize(4);
        Set<NDManager> managers = new HashSet<>();
        for (int r = 0; r < 4; r++) {
            RankInfo info = out.get(r);
            assertThat(info.rank()).isEqualTo(r);
            assertThat(info.thread()).isEqualTo("rank-" + r);
            assertThat(info.gradMode()).as("grad mode on in rank %d", r).isTrue();
            assertThat(info.device()).isEqualTo(Device.cpu());
            assertThat(info.manager().isOpen()).as("context closed after run").isFalse();
            managers.add(info.manager());
        }
        assertThat(managers).hasSize(4);
    }

    @Test
    void everyRankGetsTheGroupsOfTheGrid() {
        RankGrid grid = RankGrid.create(8, 2, 2, 1, 2);
        List<Boolean> ok = LocalWorld.run(grid, TIMEOUT, ctx -> {
            for (GroupKind kind : GroupKind.values()) {
                ProcessGroup g = ctx.group(kind);
                int[] expected = grid.group(kind, ctx.rank());
                assertThat(g.globalRanks()).as("%s", kind).containsExactly(expected);
                assertThat(g.size()).isEqualTo(expected.length);
                assertThat(g.globalRanks()[g.rank()]).isEqualTo(ctx.rank());
            }
            assertThat(ctx.tensorGroup().name()).startsWith("tp[");
            assertThat(ctx.group(GroupKind.DATA_CONTEXT).name()).startsWith("dp-cp[");
            return true;
        });
        assertThat(ok).containsOnly(true);
    }

    @Test
    void groupNamesListTheirGlobalRanks() {
        RankGrid grid = RankGrid.create(4, 2, 1, 1, 1);
        List<String> names = LocalWorld.run(grid, TIMEOUT,
                ctx -> ctx.tensorGroup().name() + " " + ctx.group(GroupKind.DATA).name());
        assertThat(names).containsExactly("tp[0,1] dp[0,2]", "tp[0,1] dp[1,3]", "tp[2,3] dp[0,2]", "tp[2,3] dp[1,3]");
    }

    @Test
    void sameRanksInDifferentKindsAreIndependentGroups() {
        // cp = 1, so DATA and DATA_CONTEXT hold the same ranks but must not share a channel
        RankGrid grid = RankGrid.create(2, 1, 1, 1, 1);
        List<float[]> out = LocalWorld.run(grid, TIMEOUT, ctx -> {
            ProcessGroup dp = ctx.group(GroupKind.DATA);
            ProcessGroup dpcp = ctx.group(GroupKind.DATA_CONTEXT);
            assertThat(dp).isNotSameAs(dpcp);
            assertThat(dp.name()).isEqualTo("dp[0,1]");
            assertThat(dpcp.name()).isEqualTo("dp-cp[0,1]");
            if (ctx.rank() == 0) {
                dp.send(ctx.manager().create(new float[] {1}), 1);
                dpcp.send(ctx.manager().create(new float[] {2}), 1);
                return null;
            }
            // received in the opposite order: each group has its own mailbox
            float fromDpCp = dpcp.recv(ctx.manager(), new Shape(1), DataType.FLOAT32, 0).getFloat(0);
            float fromDp = dp.recv(ctx.manager(), new Shape(1), DataType.FLOAT32, 0).getFloat(0);
            return new float[] {fromDp, fromDpCp};
        });
        assertThat(out.get(1)).containsExactly(1f, 2f);
    }

    @Test
    void theFirstFailureIsRethrownWithTheRankNamed() {
        RankGrid grid = RankGrid.create(3, 3, 1, 1, 1);
        assertThatThrownBy(() -> LocalWorld.run(grid, TIMEOUT, ctx -> {
                    if (ctx.rank() == 1) {
                        throw new UnsupportedOperationException("not today");
                    }
                    ctx.tensorGroup().barrier();
                    return null;
                }))
                .isInstanceOf(RuntimeException.class)
                .hasMessage("rank 1 failed: java.lang.UnsupportedOperationException: not today")
                .cause()
                .isInstanceOf(UnsupportedOperationException.class)
                .hasMessage("not today");
    }

    @Test
    void assertionErrorsInsideRanksPropagate() {
        assertThatThrownBy(() -> LocalWorld.run(RankGrid.create(2, 2, 1, 1, 1), TIMEOUT, ctx -> {
                    assertThat(ctx.rank()).isEqualTo(0);
                    return null;
                }))
                .hasMessageStartingWith("rank 1 failed")
                .hasCauseInstanceOf(AssertionError.class);
    }

    @Test
    void aRankStuckOutsideCollectivesIsAbandonedAfterTheTimeout() {
        long start = System.nanoTime();
        Throwable thrown = ThreadCollectivesTest.catchRun(RankGrid.create(2, 2, 1, 1, 1), Duration.ofMillis(300), ctx -> {
            if (ctx.rank() == 0) {
                throw new IllegalStateException("early");
            }
            ThreadCollectivesTest.sleep(60_000); // not in a collective, so abort cannot reach it
            return null;
        });
        assertThat((System.nanoTime() - start) / 1e9).as("seconds, far below the stuck rank's 60").isLessThan(20);
        assertThat(thrown).hasMessageStartingWith("rank 0 failed");
        assertThat(thrown.getSuppressed()).anySatisfy(s -> assertThat(s).hasMessageContaining("abandoned: rank-1"));
    }

    @Test
    void manyRunsDoNotLeakOrInterfere() {
        RankGrid grid = RankGrid.create(4, 2, 1, 1, 1);
        long before = systemManagerResources();
        for (int i = 0; i < 20; i++) {
            int round = i;
            List<Float> sums = LocalWorld.run(grid, TIMEOUT, ctx -> ctx.group(GroupKind.DATA)
                    .allReduce(ctx.manager().ones(new Shape(8)).mul(round), ReduceOp.SUM)
                    .sum()
                    .getFloat());
            assertThat(sums).containsOnly(16f * round);
        }
        // collectives create results from shared deposits (system manager) and re-attach them;
        // nothing may stay behind there
        assertThat(systemManagerResources()).isEqualTo(before);
    }

    /** The system manager's resource count, read from BaseNDManager#toString. */
    private static long systemManagerResources() {
        try (NDManager m = NDManager.newBaseManager()) {
            String s = m.getParentManager().toString();
            return Long.parseLong(s.substring(s.lastIndexOf("Resource size: ") + 15).trim());
        }
    }
}
