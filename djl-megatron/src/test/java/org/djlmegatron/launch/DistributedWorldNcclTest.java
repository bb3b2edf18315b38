package org.djlmegatron.launch;

import org.djlmegatron.comm.LaunchConfig;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.RankDevices;
import org.djlmegatron.comm.ReduceOp;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.locks.LockSupport;
import org.djlmegatron.comm.nccl.FakeNccl;
import org.djlmegatron.comm.nccl.NcclProcessGroup;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;
import org.junit.jupiter.api.Test;

/** The wiring of NCCL groups into {@link DistributedWorld}, over the in-memory NCCL on CPU ranks. */
class DistributedWorldNcclTest {

    private static final Duration TIMEOUT = Duration.ofSeconds(60);
    private static final RankGrid TP2_DP2 = RankGrid.create(4, 2, 1, 1, 1);

    private static Map<String, byte[]> steps(RankContext ctx) {
        Map<String, byte[]> out = new LinkedHashMap<>();
        Random random = new Random(ctx.rank());
        float[] v = new float[24];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) random.nextGaussian();
        }
        NDArray x = ctx.manager().create(v, new Shape(4, 6));
        for (GroupKind kind : new GroupKind[] {GroupKind.TENSOR, GroupKind.DATA, GroupKind.MODEL}) {
            ProcessGroup g = ctx.group(kind);
            out.put(kind + " allReduce", g.allReduce(x, ReduceOp.SUM).toByteArray());
            out.put(kind + " allGather", g.allGather(x, 1).toByteArray());
            out.put(kind + " reduceScatter", g.reduceScatter(x.toType(DataType.FLOAT16, false), 0, ReduceOp.AVG)
                    .toByteArray());
            out.put(kind + " allToAll", g.allToAll(x, 1, 0).toByteArray());
        }
        return out;
    }

    @Test
    void everyGroupIsNcclBootstrappedOverTheCpuGroupsAndGivesTheSameResults() {
        List<Map<String, byte[]>> cpu = LocalWorld.run(TP2_DP2, TIMEOUT, DistributedWorldNcclTest::steps);
        FakeNccl fake = new FakeNccl();
        List<Map<String, byte[]>> nccl = DistributedWorld.run(TP2_DP2, LaunchConfig.singleNode(4, TIMEOUT),
                RankDevices.cpu(), fake, ctx -> {
                    for (GroupKind kind : GroupKind.values()) {
                        assertThat(ctx.group(kind)).as("%s", kind).isInstanceOf(NcclProcessGroup.class);
                    }
                    return steps(ctx);
                });
        for (int r = 0; r < 4; r++) {
            for (String key : cpu.get(r).keySet()) {
                assertThat(nccl.get(r).get(key)).as("rank %d %s", r, key).isEqualTo(cpu.get(r).get(key));
            }
        }
        // communicators only for the groups used: 2 tensor, 2 data and 1 model group, one per member
        assertThat(fake.initialised()).isEqualTo(2 * 2 + 2 * 2 + 4);
        assertThat(fake.destroyed()).as("closed when the run ends").isEqualTo(fake.initialised());
        assertThat(fake.aborts()).isEmpty();
    }

    @Test
    void aFailingRankAbortsTheNcclGroupsOfEveryRankAtOnce() {
        FakeNccl fake = new FakeNccl();
        long start = System.nanoTime();
        assertThatThrownBy(() -> DistributedWorld.run(TP2_DP2, LaunchConfig.singleNode(4, TIMEOUT), RankDevices.cpu(),
                fake, ctx -> {
                    NDArray x = ctx.manager().create(new float[] {ctx.rank()});
                    ctx.tensorGroup().allReduce(x, ReduceOp.SUM);
                    if (ctx.rank() == 3) {
                        throw new IllegalStateException("boom");
                    }
                    return ctx.group(GroupKind.DATA).allReduce(x, ReduceOp.SUM).toFloatArray()[0];
                }))
                .hasMessage("rank 3 failed: java.lang.IllegalStateException: boom");
        assertThat(System.nanoTime() - start).as("well before the timeout").isLessThan(TIMEOUT.toNanos() / 2);
        // Which communicators exist depends on how far the other ranks got (tp[2,3]'s certainly: rank 3
        // used it); a rank still setting one up when the run fails aborts it as soon as it is made.
        long deadline = System.nanoTime() + TIMEOUT.toNanos() / 2;
        while (fake.aborts().size() < fake.initialised() && System.nanoTime() < deadline) {
            LockSupport.parkNanos(10_000_000L);
        }
        assertThat(fake.initialised()).as("communicators made").isGreaterThanOrEqualTo(2);
        assertThat(fake.aborts()).as("every communicator made was aborted").hasSize(fake.initialised());
        assertThat(fake.destroyed()).as("none destroyed as if the run had ended well").isZero();
    }
}
