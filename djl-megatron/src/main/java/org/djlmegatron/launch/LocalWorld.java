package org.djlmegatron.launch;

import org.djlmegatron.comm.LaunchConfig;
import java.time.Duration;
import java.util.List;
import java.util.function.Function;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;

/**
 * Runs every rank of a {@link RankGrid} as a thread of this JVM, on the CPU, connected by
 * {@link ThreadProcessGroup}s: the way to test parallel code on one machine. It is the one-node
 * case of {@link DistributedWorld}: nothing touches the network.
 *
 * <p>If a rank fails, every group is aborted, so the ranks blocked in collectives fail at once
 * with a {@link CollectiveException} instead of waiting for the timeout, and {@code run} throws
 * the first failure.
 */
public final class LocalWorld {

    /** The collective timeout of {@link #run(RankGrid, Function)}. */
    public static final Duration DEFAULT_TIMEOUT = LaunchConfig.DEFAULT_TIMEOUT;

    private LocalWorld() {}

    /** {@link #run(RankGrid, Duration, Function)} with {@link #DEFAULT_TIMEOUT}. */
    public static <T> List<T> run(RankGrid grid, Function<RankContext, T> body) {
        return run(grid, DEFAULT_TIMEOUT, body);
    }

    /**
     * Runs {@code body} once per rank, each on its own thread named {@code "rank-N"} with grad
     * mode on, its own CPU NDManager and a group of every {@link GroupKind}.
     *
     * <p>The rank's context (and so its manager) is closed when {@code body} returns: return
     * plain Java values (e.g. {@code float[]}), not NDArrays.
     *
     * @param grid the layout of the ranks
     * @param timeout the limit for every wait inside a collective; also how long {@code run}
     *     waits for the other ranks to stop once one has failed
     * @param body the work of one rank
     * @return the values returned by {@code body}, in rank order
     * @throws RuntimeException naming the first rank that failed, with its exception as the
     *     cause and the other ranks' failures as suppressed exceptions
     */
    public static <T> List<T> run(RankGrid grid, Duration timeout, Function<RankContext, T> body) {
        return DistributedWorld.run(grid, LaunchConfig.singleNode(grid.worldSize(), timeout), body);
    }
}
