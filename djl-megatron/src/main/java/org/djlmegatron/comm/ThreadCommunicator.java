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
 * <p>Deposited arrays are detached views owned by this object, never by a member's manager, so a
 * member that leaves early (abort) and closes its manager cannot free memory another member is
 * still reading; the views are closed once every member that deposited has left the step.
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
        final boolean[] finished;
        int arrived;
        int finishedCount;
        /** Members that deposited and have not left; deposits are closed when this reaches 0. */
        int active;
        String mismatch;

        Step(long call, int size) {
            this.call = call;
            this.signatures = new String[size];
            this.deposits = new NDArray[size];
            this.finished = new boolean[size];
        }

        /** The deposits in group-rank order; valid until this member calls finish or leave. */
        NDArray[] deposits() {
            return deposits;
        }
    }

    /**
     * Phase 1: deposits {@code deposit} (a detached view this object now owns, or null) and waits
     * until every member has deposited into the same call.
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
                }
                lock.notifyAll();
            }
            long deadline = System.nanoTime() + timeout.toNanos();
            while (step.arrived < size() && abortReason == null) {
                if (!await(deadline, member, op)) {
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
                leaveLocked(step);
                throw aborted(member, op);
            }
            return step;
        }
    }

    /** Phase 2: this member has read every deposit; waits until all members have. */
    void finish(Step step, int member, String op) {
        synchronized (lock) {
            step.finished[member] = true;
            step.finishedCount++;
            leaveLocked(step);
            if (step.finishedCount == size()) {
                lock.notifyAll();
                return;
            }
            long deadline = System.nanoTime() + timeout.toNanos();
            while (step.finishedCount < size() && abortReason == null) {
                if (!await(deadline, member, op)) {
                    String message = timeoutMessage(member, op, missing(step.finished));
                    abortLocked(message);
                    throw new CollectiveException(message);
                }
            }
            if (step.finishedCount < size()) {
                throw aborted(member, op);
            }
        }
    }

    /** Leaves {@code step} after an error while reading its deposits; aborts the group. */
    void fail(Step step, int member, String op, Throwable error) {
        synchronized (lock) {
            abortLocked(prefix(member, op) + "failed: " + error);
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
