package org.djlmegatron.comm;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDManager;
import ai.djl.pytorch.jni.JniUtils;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import java.util.stream.Collectors;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;

/**
 * Runs every rank of a {@link RankGrid} as a thread of this JVM, on the CPU, connected by
 * {@link ThreadProcessGroup}s: the way to test parallel code on one machine.
 *
 * <p>If a rank fails, every group is aborted, so the ranks blocked in collectives fail at once
 * with a {@link CollectiveException} instead of waiting for the timeout, and {@code run} throws
 * the first failure.
 */
public final class LocalWorld {

    /** The collective timeout of {@link #run(RankGrid, Function)}. */
    public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(120);

    private final int size;
    private final Object[] results;
    private final Throwable[] failures;
    private final List<ThreadProcessGroup> oneMemberPerGroup = new ArrayList<>();
    private int finished;
    private int firstFailure = -1;
    private long firstFailureNanos;

    private LocalWorld(int size) {
        this.size = size;
        this.results = new Object[size];
        this.failures = new Throwable[size];
    }

    /** {@link #run(RankGrid, Duration, Function)} with {@link #DEFAULT_TIMEOUT}. */
    public static <T> List<T> run(RankGrid grid, Function<RankContext, T> body) {
        return run(grid, DEFAULT_TIMEOUT, body);
    }

    /**
     * Runs {@code body} once per rank, each on its own thread named {@code "rank-N"} with grad
     * mode on, its own CPU {@link NDManager} and a group of every {@link GroupKind}.
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
        Engine.getInstance(); // load the native library once, before the ranks race to do it
        LocalWorld world = new LocalWorld(grid.worldSize());
        List<Map<GroupKind, ProcessGroup>> groups = world.buildGroups(grid, timeout);
        List<Thread> threads = new ArrayList<>(grid.worldSize());
        for (int r = 0; r < grid.worldSize(); r++) {
            int rank = r;
            Thread t = new Thread(() -> world.runRank(grid, rank, groups.get(rank), body), "rank-" + r);
            t.setDaemon(true); // a rank stuck outside collectives must not keep the JVM alive
            threads.add(t);
        }
        threads.forEach(Thread::start);
        world.awaitRanks(timeout, threads);
        @SuppressWarnings("unchecked")
        List<T> out = (List<T>) Collections.unmodifiableList(Arrays.asList(world.results));
        return out;
    }

    private List<Map<GroupKind, ProcessGroup>> buildGroups(RankGrid grid, Duration timeout) {
        List<Map<GroupKind, ProcessGroup>> perRank = new ArrayList<>(size);
        for (int r = 0; r < size; r++) {
            perRank.add(new EnumMap<>(GroupKind.class));
        }
        for (GroupKind kind : GroupKind.values()) {
            for (int[] ranks : grid.groups(kind)) {
                // Groups of different kinds with the same ranks stay separate communicators:
                // their calls are independent sequences, as in Megatron.
                List<ThreadProcessGroup> members =
                        ThreadProcessGroup.newGroup(groupName(kind, ranks), ranks, timeout);
                oneMemberPerGroup.add(members.get(0));
                for (int i = 0; i < ranks.length; i++) {
                    perRank.get(ranks[i]).put(kind, members.get(i));
                }
            }
        }
        return perRank;
    }

    private <T> void runRank(
            RankGrid grid, int rank, Map<GroupKind, ProcessGroup> groups, Function<RankContext, T> body) {
        try {
            NDManager manager = NDManager.newBaseManager(Device.cpu()); // loads the engine first
            JniUtils.setGradMode(true); // grad mode is thread-local in libtorch
            try (RankContext ctx = new RankContext(grid, rank, groups, manager)) {
                results[rank] = body.apply(ctx);
            }
        } catch (Throwable t) {
            recordFailure(rank, t);
        } finally {
            synchronized (this) {
                finished++;
                notifyAll();
            }
        }
    }

    private void recordFailure(int rank, Throwable t) {
        boolean first;
        synchronized (this) {
            failures[rank] = t;
            first = firstFailure < 0;
            if (first) {
                firstFailure = rank;
                firstFailureNanos = System.nanoTime();
                notifyAll();
            }
        }
        if (first) {
            String reason = "rank " + rank + " failed: " + t;
            oneMemberPerGroup.forEach(g -> g.abort(reason));
        }
    }

    /** Waits for every rank; once one failed, waits at most {@code timeout} for the rest. */
    private void awaitRanks(Duration timeout, List<Thread> threads) {
        synchronized (this) {
            try {
                while (finished < size) {
                    if (firstFailure < 0) {
                        wait();
                    } else {
                        long left = firstFailureNanos + timeout.toNanos() - System.nanoTime();
                        if (left <= 0) {
                            break;
                        }
                        wait(Math.max(1, left / 1_000_000));
                    }
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                oneMemberPerGroup.forEach(g -> g.abort("LocalWorld.run was interrupted"));
                throw new CollectiveException("interrupted while waiting for the ranks", e);
            }
            if (finished == size) {
                oneMemberPerGroup.forEach(ThreadProcessGroup::dispose);
            }
            if (firstFailure >= 0) {
                throw failure(threads);
            }
        }
    }

    private RuntimeException failure(List<Thread> threads) {
        Throwable cause = failures[firstFailure];
        RuntimeException e = new RuntimeException("rank " + firstFailure + " failed: " + cause, cause);
        for (int r = 0; r < size; r++) {
            if (r != firstFailure && failures[r] != null) {
                e.addSuppressed(new RuntimeException("rank " + r + " failed: " + failures[r], failures[r]));
            }
        }
        if (finished < size) {
            String stuck = threads.stream()
                    .filter(Thread::isAlive)
                    .map(Thread::getName)
                    .collect(Collectors.joining(", "));
            e.addSuppressed(new CollectiveException(
                    "still running after the first failure, abandoned: " + stuck));
        }
        return e;
    }

    /** E.g. {@code "tp[0,1]"}, {@code "dp-cp[0,2,4,6]"}. */
    private static String groupName(GroupKind kind, int[] ranks) {
        String prefix = switch (kind) {
            case TENSOR -> "tp";
            case PIPELINE -> "pp";
            case DATA -> "dp";
            case CONTEXT -> "cp";
            case DATA_CONTEXT -> "dp-cp";
            case MODEL -> "mp";
            case EXPERT -> "ep";
            case EXPERT_DATA -> "edp";
        };
        return prefix + Arrays.stream(ranks)
                .mapToObj(Integer::toString)
                .collect(Collectors.joining(",", "[", "]"));
    }
}
