package org.djlmegatron.comm;

import ai.djl.ndarray.NDArray;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * The state one group shares between its member threads: a two-phase rendezvous per collective
 * call and a FIFO mailbox per ordered pair of members.
 *
 * <p>Deposited arrays are detached views owned by this object, never by a member's manager; they
 * are closed once every member that deposited has left the step. No member leaves a step, even
 * when it fails, while another may still read its deposit: the view shares the input's memory,
 * which the owner could overwrite or (for arrays made from Java arrays) release.
 *
 * <p>Any failure (timeout, mismatched calls, an error while computing, an external abort) aborts
 * the communicator: the call sequence is broken, so every later call fails at once.
 */
final class ThreadCommunicator {

    private final String name;
    private final int[] globalRanks;
    private final Duration timeout;
    private final Object lock = new Object();
    /** Per member: the sequence number of its next collective call. */
    private final long[] nextCall;
    private final Map<Long, Step> steps = new HashMap<>();
    /** Index {@code src * size + dst}: messages sent and not yet received, oldest first. */
    private final List<ArrayDeque<NDArray>> mailboxes;
    private String abortReason;

    ThreadCommunicator(String name, int[] globalRanks, Duration timeout) {
        if (timeout.isNegative() || timeout.isZero()) {
            throw new IllegalArgumentException("timeout must be positive, got " + timeout);
        }
        this.name = name;
        this.globalRanks = globalRanks.clone();
        this.timeout = timeout;
        this.nextCall = new long[globalRanks.length];
        int n = globalRanks.length;
        this.mailboxes = new ArrayList<>(n * n);
        for (int i = 0; i < n * n; i++) {
            mailboxes.add(new ArrayDeque<>());
        }
    }

    String name() {
        return name;
    }

    int size() {
        return globalRanks.length;
    }

    int[] globalRanks() {
        return globalRanks.clone();
    }

    /** One collective call: what every member deposited and how far each has got. */
    static final class Step {
        final long call;
        final String[] signatures;
        final NDArray[] deposits;
        /** Per member: done reading the deposits (or never will). */
        final boolean[] doneReading;
        int arrived;
        /** Members that may still read the deposits; set to the group size once all arrived. */
        int reading;
        /** Members that deposited and have not left; deposits are closed when this reaches 0. */
        int active;
        String mismatch;

        Step(long call, int size) {
            this.call = call;
            this.signatures = new String[size];
            this.deposits = new NDArray[size];
            this.doneReading = new boolean[size];
        }

        /** The deposits in group-rank order; valid until this member calls finish or fail. */
        NDArray[] deposits() {
            return deposits;
        }
    }

    /**
     * Phase 1: deposits {@code deposit} (a detached view this object now owns, or null) and waits
     * until every member has deposited into the same call. On success the caller must read the
     * deposits and then call {@link #finish} or {@link #fail}.
     */
    Step arrive(int member, String op, String signature, NDArray deposit) {
        synchronized (lock) {
            if (abortReason != null) {
                close(deposit);
                throw aborted(member, op);
            }
            long call = nextCall[member]++;
            Step step = steps.computeIfAbsent(call, c -> new Step(c, size()));
            step.signatures[member] = signature;
            step.deposits[member] = deposit;
            step.arrived++;
            step.active++;
            if (step.arrived == size()) {
                step.mismatch = mismatch(step);
                if (step.mismatch != null) {
                    abortLocked(step.mismatch);
                } else {
                    step.reading = size();
                }
                lock.notifyAll();
            }
            long deadline = System.nanoTime() + timeout.toNanos();
            while (step.arrived < size() && abortReason == null) {
                if (!await(deadline, member, op)) {
                    // not everybody arrived, so nobody reads: leaving at once is safe
                    String message = timeoutMessage(member, op, missing(step.signatures));
                    abortLocked(message);
                    leaveLocked(step);
                    throw new CollectiveException(message);
                }
            }
            if (step.mismatch != null) {
                leaveLocked(step);
                throw new CollectiveException(prefix(member, op) + step.mismatch);
            }
            if (abortReason != null) {
                if (step.arrived == size()) {
                    doneReadingLocked(step, member);
                    awaitNoReaders(step);
                }
                leaveLocked(step);
                throw aborted(member, op);
            }
            return step;
        }
    }

    /**
     * Phase 2: this member has read every deposit; waits until all members have, so that no
     * member returns (and overwrites its input) while another still reads it.
     */
    void finish(Step step, int member, String op) {
        synchronized (lock) {
            doneReadingLocked(step, member);
            leaveLocked(step);
            long deadline = System.nanoTime() + timeout.toNanos();
            while (step.reading > 0 && abortReason == null) {
                if (!await(deadline, member, op)) {
                    String message = timeoutMessage(member, op, missing(step.doneReading));
                    abortLocked(message);
                    throw new CollectiveException(message);
                }
            }
            if (step.reading > 0) {
                awaitNoReaders(step);
                throw aborted(member, op);
            }
        }
    }

    /**
     * Leaves {@code step} after an error while reading its deposits and aborts the group; returns
     * once nobody reads this member's input any more.
     */
    void fail(Step step, int member, String op, Throwable error) {
        synchronized (lock) {
            abortLocked(prefix(member, op) + "failed: " + error);
            doneReadingLocked(step, member);
            awaitNoReaders(step);
            leaveLocked(step);
        }
    }

    /** Queues {@code message} (a detached copy this object now owns) from {@code src} to {@code dst}. */
    void post(int src, int dst, NDArray message) {
        synchronized (lock) {
            if (abortReason != null) {
                close(message);
                throw aborted(src, "send");
            }
            mailboxes.get(src * size() + dst).addLast(message);
            lock.notifyAll();
        }
    }

    /** Takes the oldest message from {@code src} to {@code dst}; the caller owns it. */
    NDArray take(int src, int dst) {
        synchronized (lock) {
            ArrayDeque<NDArray> box = mailboxes.get(src * size() + dst);
            long deadline = System.nanoTime() + timeout.toNanos();
            while (box.isEmpty() && abortReason == null) {
                if (!await(deadline, dst, "recv")) {
                    String message = prefix(dst, "recv") + "timed out after " + timeout.toMillis() + " ms"
                            + " waiting for a message from " + member(src);
                    abortLocked(message);
                    throw new CollectiveException(message);
                }
            }
            if (abortReason != null) {
                throw aborted(dst, "recv");
            }
            return box.removeFirst();
        }
    }

    /**
     * Fails every pending and future call of every member with {@code reason}; frees queued
     * messages. The first reason wins.
     */
    void abort(String reason) {
        synchronized (lock) {
            abortLocked(reason);
        }
    }

    /** Frees everything still held; call once no member will use the group again. */
    void dispose() {
        synchronized (lock) {
            for (Step step : steps.values()) {
                Arrays.stream(step.deposits).forEach(ThreadCommunicator::close);
            }
            steps.clear();
            clearMailboxes();
        }
    }

    /** Error-message prefix naming the group, the member and the operation. */
    String prefix(int member, String op) {
        return "group " + name + ": " + member(member) + " " + op + ": ";
    }

    String member(int member) {
        return "rank " + member + " (global " + globalRanks[member] + ")";
    }

    private void abortLocked(String reason) {
        if (abortReason == null) {
            abortReason = reason;
            clearMailboxes();
        }
        lock.notifyAll();
    }

    private void doneReadingLocked(Step step, int member) {
        step.doneReading[member] = true;
        step.reading--;
        lock.notifyAll();
    }

    /**
     * On the way out after an abort: waits (at most the timeout) until no member reads the
     * deposits, because a member's input must stay intact while anyone reads it, and inputs
     * created from Java arrays live in a Java buffer that closing the array releases.
     */
    private void awaitNoReaders(Step step) {
        boolean interrupted = Thread.interrupted(); // else timedWait would throw at once, forever
        long deadline = System.nanoTime() + timeout.toNanos();
        while (step.reading > 0) {
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                break;
            }
            try {
                TimeUnit.NANOSECONDS.timedWait(lock, left);
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    private void leaveLocked(Step step) {
        step.active--;
        if (step.active == 0) {
            Arrays.stream(step.deposits).forEach(ThreadCommunicator::close);
            steps.remove(step.call);
        }
    }

    /** Waits on the lock until notified or the deadline; false once the deadline has passed. */
    private boolean await(long deadline, int member, String op) {
        long left = deadline - System.nanoTime();
        if (left <= 0) {
            return false;
        }
        try {
            TimeUnit.NANOSECONDS.timedWait(lock, left);
            return true;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            abortLocked(prefix(member, op) + "interrupted");
            return true;
        }
    }

    private String timeoutMessage(int member, String op, List<Integer> missing) {
        StringBuilder sb = new StringBuilder(prefix(member, op));
        sb.append("timed out after ").append(timeout.toMillis()).append(" ms waiting for ");
        for (int i = 0; i < missing.size(); i++) {
            sb.append(i == 0 ? "" : ", ").append(member(missing.get(i)));
        }
        return sb.toString();
    }

    private CollectiveException aborted(int member, String op) {
        return new CollectiveException(prefix(member, op) + "aborted: " + abortReason);
    }

    private String mismatch(Step step) {
        String first = step.signatures[0];
        boolean same = Arrays.stream(step.signatures).allMatch(first::equals);
        if (same) {
            return null;
        }
        StringBuilder sb = new StringBuilder("members called different collectives (or shapes/dtypes)"
                + " at call #" + step.call + " of group " + name + ": ");
        for (int i = 0; i < size(); i++) {
            sb.append(i == 0 ? "" : "; ").append(member(i)).append(' ').append(step.signatures[i]);
        }
        return sb.toString();
    }

    private void clearMailboxes() {
        for (ArrayDeque<NDArray> box : mailboxes) {
            box.forEach(ThreadCommunicator::close);
            box.clear();
        }
    }

    private static List<Integer> missing(Object[] perMember) {
        List<Integer> missing = new ArrayList<>();
        for (int i = 0; i < perMember.length; i++) {
            if (perMember[i] == null) {
                missing.add(i);
            }
        }
        return missing;
    }

    private static List<Integer> missing(boolean[] perMember) {
        List<Integer> missing = new ArrayList<>();
        for (int i = 0; i < perMember.length; i++) {
            if (!perMember[i]) {
                missing.add(i);
            }
        }
        return missing;
    }

    private static void close(NDArray array) {
        if (array != null) {
            array.close();
        }
    }
}
