package org.djlmegatron.comm;

import java.time.Duration;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicLong;

/**
 * One rank's communication thread: runs the collectives its compute thread hands it, one at a
 * time in the order they were handed over, so that the compute thread goes on while they run
 * (Megatron's {@code async_op=True} on a separate stream). Every member of a group must hand over
 * its collectives on that group in the same order, and the compute thread must not call a group
 * while work on it is pending here ({@link PendingWork#await} first): a group's calls are a
 * sequence, whoever makes them.
 *
 * <p>The thread is a daemon: a rank that stops waiting (its run failed) cannot keep the JVM alive;
 * a collective stuck in it fails with its group's timeout, or at once when the group is aborted.
 */
public final class CommThread implements AutoCloseable {

    private final ExecutorService executor;
    private final String name;
    private final AtomicLong busyNanos = new AtomicLong();

    /** @param name the thread's name, e.g. {@code "rank-3-comm"} */
    public CommThread(String name) {
        this.name = name;
        executor = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, name);
            t.setDaemon(true);
            return t;
        });
    }

    /**
     * Queues {@code work}; its result, or its failure, comes from the handle's {@code await}.
     *
     * @param what what the work is, for errors, e.g. {@code "overlapped gradient all-reduce of bucket 2 of 5"}
     * @param timeout how long {@code await} waits (longer than the collectives' own timeout, so that theirs,
     *     which names the group, the rank and the operation, fires first)
     */
    public <T> PendingWork<T> submit(String what, Duration timeout, Callable<T> work) {
        return new PendingWork<>(what, timeout, executor.submit(() -> {
            long t0 = System.nanoTime();
            try {
                return work.call();
            } finally {
                busyNanos.addAndGet(System.nanoTime() - t0);
            }
        }));
    }

    /** Seconds this thread has spent running work (communication the compute thread did not do itself). */
    public double busySeconds() {
        return busyNanos.get() / 1e9;
    }

    /**
     * Takes no more work. Work already handed over still runs (its peers expect it): a collective
     * blocked on a peer that is gone ends with its group's timeout, or at once when the group is aborted.
     */
    @Override
    public void close() {
        executor.shutdown();
    }

    /**
     * {@link #close()}, then waits up to {@code limit} for the work handed over to end: its owner
     * frees the buffers that work reads once this returns (after a failed step the group is
     * aborted, so that work ends at once). Returns whether it ended in time.
     */
    public boolean closeAndWait(Duration limit) {
        executor.shutdown();
        try {
            return executor.awaitTermination(limit.toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }

    @Override
    public String toString() {
        return "CommThread[" + name + "]";
    }
}
