package org.djlmegatron.launch;

import org.djlmegatron.comm.LaunchConfig;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.Shape;
import java.util.List;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankGrid;

/**
 * Checks a multi-node setup by hand: joins the world described by the environment (see
 * {@link LaunchConfig#fromEnvironment}), with tensor parallelism inside each node and data
 * parallelism across nodes, checks an all-reduce over both kinds of group and times a 64 MB
 * all-reduce over the data-parallel group (best of three). Prints one line per rank and exits 0
 * when every sum is right, 1 with the reason otherwise.
 *
 * <p>Usage: {@code java -Dai.djl.offline=true -cp CLASSPATH org.djlmegatron.launch.WorldCheck NPROC_PER_NODE}
 */
public final class WorldCheck {

    private WorldCheck() {}

    public static void main(String[] args) {
        try {
            int nproc = args.length > 0 ? Integer.parseInt(args[0]) : 1;
            LaunchConfig launch = LaunchConfig.fromEnvironment(nproc);
            RankGrid grid = RankGrid.create(launch.worldSize(), nproc, 1, 1, 1);
            System.out.println("node " + launch.nodeRank() + " of " + launch.nnodes() + ": joining "
                    + launch.masterAddr() + ":" + launch.masterPort() + " as ranks " + launch.firstRank() + ".."
                    + (launch.firstRank() + nproc - 1) + " of " + grid);
            List<String> lines = DistributedWorld.run(grid, launch, ctx -> {
                ProcessGroup tp = ctx.group(GroupKind.TENSOR);
                ProcessGroup dp = ctx.group(GroupKind.DATA);
                float one = ctx.rank() + 1;
                float tpSum = tp.allReduce(ctx.manager().create(new float[] {one}), ReduceOp.SUM).getFloat(0);
                float dpSum = dp.allReduce(ctx.manager().create(new float[] {one}), ReduceOp.SUM).getFloat(0);
                float tpExpected = 0;
                for (int r : tp.globalRanks()) {
                    tpExpected += r + 1;
                }
                float dpExpected = 0;
                for (int r : dp.globalRanks()) {
                    dpExpected += r + 1;
                }
                if (tpSum != tpExpected || dpSum != dpExpected) {
                    throw new IllegalStateException("rank " + ctx.rank() + ": sums " + tpSum + ", " + dpSum
                            + " instead of " + tpExpected + ", " + dpExpected);
                }
                NDArray big = ctx.manager().ones(new Shape(16 << 20)); // 64 MB of float32
                double ms = Double.MAX_VALUE;
                for (int i = 0; i < 3; i++) { // the best of three
                    dp.barrier();
                    long start = System.nanoTime();
                    dp.allReduce(big, ReduceOp.SUM).close();
                    ms = Math.min(ms, (System.nanoTime() - start) / 1e6);
                }
                return String.format("rank %d: %s sum %.0f, %s sum %.0f, 64 MB all-reduce over %s in %.1f ms"
                        + " (best of 3)", ctx.rank(), tp.name(), tpSum, dp.name(), dpSum, dp.name(), ms);
            });
            lines.forEach(System.out::println);
            System.out.println("node " + launch.nodeRank() + ": OK");
            System.exit(0);
        } catch (Throwable t) {
            System.err.println("node check failed: " + t.getMessage());
            System.exit(1);
        }
    }
}
