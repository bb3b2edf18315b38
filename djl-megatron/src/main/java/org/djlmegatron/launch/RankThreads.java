package org.djlmegatron.launch;

import org.djlmegatron.comm.CollectiveAbortedException;
import org.djlmegatron.comm.CollectiveException;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.RankDevices;
import ai.djl.ndarray.NDManager;
import ai.djl.pytorch.jni.JniUtils;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import java.util.function.Function;
import java.util.stream.Collectors;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;

/**
 * Runs this JVM's ranks, one thread each (named {@code "rank-N"}, N the global rank), with grad
 * mode on, its own {@link NDManager} on its device and its groups; collects their results and failures.
 * The first failure, of a rank here or reported from elsewhere with {@link #failExternally},
 * starts the clock: the others get {@code timeout} to stop before they are abandoned.
 */
final class RankThreads<T> {

    private final RankGrid grid;
    private final int[] ranks;
    private final List<Map<GroupKind, ProcessGroup>> groups;
    private final Consumer<String> onLocalFailure;
    private final RankDevices devices;
    private final Object[] results;
    private final Throwable[] failures;
    private final List<Thread> threads = new ArrayList<>();
    private int finished;
    /** Index (into ranks) of the first rank that failed, if it failed before anything else did. */
    private int firstLocal = -1;
    /** Why the job failed, if that news came from outside these threads first. */
    private String firstExternal;
    private long firstFailureNanos;

    /**
     * @param ranks the global ranks to run here
     * @param groups per entry of {@code ranks}, its groups
     * @param onLocalFailure told (once, outside any lock) the reason when a rank here fails first
     * @param devices the device of each entry of {@code ranks}
     */
    RankThreads(RankGrid grid, int[] ranks, List<Map<GroupKind, ProcessGroup>> groups,
            Consumer<String> onLocalFailure, RankDevices devices) {
        this.grid = grid;
        this.ranks = ranks.clone();
        this.groups = groups;
        this.onLocalFailure = onLocalFailure;
        this.devices = devices;
        this.results = new Object[ranks.length];
        this.failures = new Throwable[ranks.length];
    }

    void start(Function<RankContext, T> body) {
        for (int i = 0; i < ranks.length; i++) {
            int index = i;
            Thread t = new Thread(() -> runRank(index, body), "rank-" + ranks[i]);
            t.setDaemon(true); // a rank stuck outside collectives must not keep the JVM alive
            threads.add(t);
        }
        threads.forEach(Thread::start);
    }

    /**
     * Records a failure that happened elsewhere (another node, a broken link). If it is the first,
     * it is the one {@link #await} reports.
     *
     * @return whether it is the first failure
     */
    synchronized boolean failExternally(String reason) {
        boolean first = !hasFailed();
        if (first) {
            firstExternal = reason;
            firstFailureNanos = System.nanoTime();
        }
        notifyAll();
        return first;
    }

    synchronized boolean hasFailed() {
        return firstLocal >= 0 || firstExternal != null;
    }

    /** Whether every thread has returned. */
    synchronized boolean allFinished() {
        return finished == ranks.length;
    }

    /**
     * Waits for every rank; once anything failed, waits at most {@code timeout} for the rest.
     *
     * @return the results, in the order of the ranks
     * @throws RuntimeException naming the first failure, with every rank's failure attached
     */
    List<T> await(Duration timeout) {
        synchronized (this) {
            try {
                while (finished < ranks.length) {
                    if (!hasFailed()) {
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
                onLocalFailure.accept("interrupted while waiting for the ranks");
                throw new CollectiveException("interrupted while waiting for the ranks", e);
            }
            if (hasFailed()) {
                throw failure();
            }
        }
        @SuppressWarnings("unchecked")
        List<T> out = (List<T>) Collections.unmodifiableList(Arrays.asList(results.clone()));
        return out;
    }

    /** The exception for the first failure, with every rank's failure attached (call once failed). */
    synchronized RuntimeException failure() {
        RuntimeException e;
        if (firstLocal >= 0) {
            Throwable cause = failures[firstLocal];
            e = new RuntimeException("rank " + ranks[firstLocal] + " failed: " + cause, cause);
        } else { // where this JVM's ranks were when the news came: the group, rank and operation they waited in
            String here = "";
            for (int i = 0; i < ranks.length && here.isEmpty(); i++) {
                if (failures[i] instanceof CollectiveAbortedException a) {
                    here = "; rank " + ranks[i] + " here was in " + a.where();
                }
            }
            e = new CollectiveException(firstExternal + here);
        }
        for (int i = 0; i < ranks.length; i++) {
            if (i != firstLocal && failures[i] != null) {
                e.addSuppressed(new RuntimeException("rank " + ranks[i] + " failed: " + failures[i], failures[i]));
            }
        }
        if (finished < ranks.length) {
            String stuck = threads.stream()
                    .filter(Thread::isAlive)
                    .map(Thread::getName)
                    .collect(Collectors.joining(", "));
            e.addSuppressed(new CollectiveException(
                    "still running after the first failure, abandoned: " + stuck));
        }
        return e;
    }

    private void runRank(int index, Function<RankContext, T> body) {
        try {
            NDManager manager = NDManager.newBaseManager(devices.of(index)); // loads the engine first
            JniUtils.setGradMode(true); // grad mode is thread-local in libtorch
            try (RankContext ctx = new RankContext(grid, ranks[index], groups.get(index), manager)) {
                results[index] = body.apply(ctx);
            }
        } catch (Throwable t) {
            recordFailure(index, t);
        } finally {
            synchronized (this) {
                finished++;
                notifyAll();
            }
        }
    }

    private void recordFailure(int index, Throwable t) {
        boolean first;
        synchronized (this) {
            failures[index] = t;
            first = !hasFailed();
            if (first) {
                firstLocal = index;
                firstFailureNanos = System.nanoTime();
                notifyAll();
            }
        }
        if (first) {
            onLocalFailure.accept("rank " + ranks[index] + " failed: " + t);
        }
    }
}
