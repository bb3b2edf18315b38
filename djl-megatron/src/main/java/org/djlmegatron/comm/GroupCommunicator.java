package org.djlmegatron.comm;

import ai.djl.ndarray.NDArray;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * The state one group shares between its members in this JVM: a two-phase rendezvous per
 * collective call and a FIFO mailbox per ordered pair of members. Members may also live in
 * other JVMs ("nodes"); their contributions arrive as {@link Frame}s over the {@link NodeMesh},
 * and this JVM's members send theirs the same way. With every member local (no mesh) this is the
 * thread backend.
 *
 * <p>A collective call: each local member deposits a detached view of its input and sends the
 * pieces that remote receivers need to their nodes; it waits until every member, local or remote,
 * has arrived; it then computes its own result from the local deposits and the remote pieces (see
 * {@link Collective}); and it waits until every local member has done so. Remote pieces are
 * copies, so only local readers hold a member back.
 *
 * <p>Deposited arrays are owned by this object, never by a member's manager; they are closed once
 * every local member that deposited has left the step. No member leaves a step, even when it
 * fails, while another may still read its deposit: the view shares the input's memory, which the
 * owner could overwrite or (for arrays made from Java arrays) release.
 *
 * <p>Any failure (timeout, mismatched calls, an error while computing, an external abort) aborts
 * the communicator: the call sequence is broken, so every later call fails at once. Aborts are
 * local to this JVM; {@code launch.DistributedWorld} tells the other nodes.
 *
 * <p>Public only for the launcher ({@code org.djlmegatron.launch.DistributedWorld}), which sits above
 * the rank grid and so outside this package; not an API for model code.
 */
public final class GroupCommunicator {

    private final String name;
    private final int[] globalRanks;
    private final Duration timeout;
    /** The group's id in frames, the same on every node; -1 when every member is local. */
    private final int groupId;
    /** Per member: its node; null when every member is local. */
    private final int[] nodes;
    private final boolean[] local;
    private final int localCount;
    /** Per other node holding members: those members, in group-rank order. */
    private final Map<Integer, int[]> remoteMembersByNode;
    private final NodeMesh mesh;
    private final Object lock = new Object();
    /** Per member: the sequence number of its next collective call (local members only). */
    private final long[] nextCall;
    private final Map<Long, Step> steps = new HashMap<>();
    /**
     * Index {@code src * size + dst} (dst local): messages sent and not yet received, oldest first;
     * an {@link NDArray} from a local sender, a {@link WireTensor} from a remote one.
     */
    private final List<ArrayDeque<Object>> mailboxes;
    /** Index as {@link #mailboxes}: messages ever queued and ever taken, to tell a sender its message was received. */
    private final long[] posted;
    private final long[] taken;
    /**
     * Whether a send to a local member returns only once the receiver has taken the message (a
     * rendezvous, as NCCL's blocking send), so that a schedule that would deadlock on GPUs
     * deadlocks (and times out) here too; otherwise sends are eager.
     */
    private volatile boolean strictSends;
    private String abortReason;

    /** A group whose members are all threads of this JVM. */
    GroupCommunicator(String name, int[] globalRanks, Duration timeout) {
        this(name, globalRanks, timeout, -1, null, 0, null);
    }

    /**
     * A group whose members live on several nodes.
     *
     * @param groupId the group's id, the same on every node
     * @param nodes per member, the node it lives on
     * @param selfNode this JVM's node
     * @param mesh the links to the other nodes
     */
    GroupCommunicator(String name, int[] globalRanks, Duration timeout, int groupId, int[] nodes,
            int selfNode, NodeMesh mesh) {
        if (timeout.isNegative() || timeout.isZero()) {
            throw new IllegalArgumentException("timeout must be positive, got " + timeout);
        }
        this.name = name;
        this.globalRanks = globalRanks.clone();
        this.timeout = timeout;
        this.groupId = groupId;
        this.nodes = nodes == null ? null : nodes.clone();
        this.mesh = mesh;
        int n = globalRanks.length;
        this.local = new boolean[n];
        Map<Integer, List<Integer>> remote = new LinkedHashMap<>();
        int count = 0;
        for (int i = 0; i < n; i++) {
            local[i] = nodes == null || nodes[i] == selfNode;
            if (local[i]) {
                count++;
            } else {
                remote.computeIfAbsent(nodes[i], k -> new ArrayList<>()).add(i);
            }
        }
        if (!remote.isEmpty() && mesh == null) {
            throw new IllegalArgumentException("group " + name + " has remote members but no links");
        }
        this.localCount = count;
        this.remoteMembersByNode = new LinkedHashMap<>();
        remote.forEach((node, members) ->
                remoteMembersByNode.put(node, members.stream().mapToInt(Integer::intValue).toArray()));
        this.nextCall = new long[n];
        this.mailboxes = new ArrayList<>(n * n);
        for (int i = 0; i < n * n; i++) {
            mailboxes.add(new ArrayDeque<>());
        }
        this.posted = new long[n * n];
        this.taken = new long[n * n];
    }

    /** Makes sends to local members rendezvous with their receive (see {@link #strictSends}). */
    void strictSends(boolean strict) {
        this.strictSends = strict;
    }

    boolean strictSends() {
        return strictSends;
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

    /** Whether {@code member} runs in this JVM. */
    boolean isLocal(int member) {
        return local[member];
    }

    /** One collective call: what every member contributed and how far each local one has got. */
    public static final class Step {
        final long call;
        final String[] signatures;
        /** Local members' deposits. */
        final NDArray[] deposits;
        /** Remote members' pieces for the receivers in this JVM. */
        final List<List<Frame.Piece>> remote;
        /** Per member: done reading the deposits (or never will); remote members never read. */
        final boolean[] doneReading;
        int arrived;
        int localArrived;
        /** Local members that may still read the deposits; set once all arrived. */
        int reading;
        /** Local members that arrived and have not left. */
        int active;
        String mismatch;

        Step(long call, int size) {
            this.call = call;
            this.signatures = new String[size];
            this.deposits = new NDArray[size];
            this.remote = new ArrayList<>(Collections.nCopies(size, null));
            this.doneReading = new boolean[size];
        }

        /** Local member {@code member}'s deposit; valid until the reader calls finish or fail. */
        NDArray deposit(int member) {
            return deposits[member];
        }

        /** Remote member {@code sender}'s piece for {@code receiver}, or null if it sent none. */
        WireTensor remotePiece(int sender, int receiver) {
            for (Frame.Piece p : remote.get(sender)) {
                if (p.receiver() == receiver || p.receiver() == Frame.Piece.EVERYONE) {
                    return p.tensor();
                }
            }
            return null;
        }
    }

    /**
     * What {@code sender} (a local member) must send to each other node for {@code op}: the
     * pieces the receivers there need, serialized. Empty when every member is local.
     */
    Map<Integer, List<Frame.Piece>> outgoing(Collective op, NDArray input, int sender) {
        if (remoteMembersByNode.isEmpty()) {
            return Map.of();
        }
        Map<Integer, List<Frame.Piece>> out = new LinkedHashMap<>();
        WireTensor shared = null;
        for (Map.Entry<Integer, int[]> e : remoteMembersByNode.entrySet()) {
            List<Frame.Piece> pieces = new ArrayList<>();
            if (input != null) {
                if (op.samePieceForEveryone()) {
                    if (shared == null) {
                        shared = serialize(op, input, sender, e.getValue()[0]);
                    }
                    if (shared != null) {
                        pieces.add(new Frame.Piece(Frame.Piece.EVERYONE, shared));
                    }
                } else {
                    for (int receiver : e.getValue()) {
                        WireTensor t = serialize(op, input, sender, receiver);
                        if (t != null) {
                            pieces.add(new Frame.Piece(receiver, t));
                        }
                    }
                }
            }
            out.put(e.getKey(), pieces);
        }
        return out;
    }

    private WireTensor serialize(Collective op, NDArray input, int sender, int receiver) {
        NDArray piece = op.piece(input, sender, receiver, size());
        if (piece == null) {
            return null;
        }
        try {
            return WireTensor.of(piece);
        } finally {
            if (piece != input) {
                piece.close();
            }
        }
    }

    /**
     * Phase 1: deposits {@code deposit} (a detached view this object now owns, or null), sends
     * {@code outgoing} (see {@link #outgoing}) and waits until every member has arrived at the
     * same call. On success the caller must read the step and then call {@link #finish} or
     * {@link #fail}.
     */
    Step arrive(int member, String op, String signature, NDArray deposit,
            Map<Integer, List<Frame.Piece>> outgoing) {
        synchronized (lock) {
            if (abortReason != null) {
                close(deposit);
                throw aborted(member, op);
            }
            long call = nextCall[member]++;
            Step step = steps.computeIfAbsent(call, c -> new Step(c, size()));
            step.signatures[member] = signature;
            step.deposits[member] = deposit;
            step.localArrived++;
            step.active++;
            for (Map.Entry<Integer, List<Frame.Piece>> e : outgoing.entrySet()) {
                mesh.send(e.getKey(), new Frame.Contribution(groupId, call, member, signature, e.getValue()));
            }
            arrivedLocked(step);
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

    /** A remote member's contribution to call {@code call} arrived (called by a link's reader). */
    public void deliver(Frame.Contribution c) {
        synchronized (lock) {
            if (abortReason != null) {
                return;
            }
            int sender = c.sender();
            if (sender < 0 || sender >= size() || local[sender]) {
                abortLocked("group " + name + ": protocol error: contribution from member " + sender);
                return;
            }
            Step step = steps.computeIfAbsent(c.call(), k -> new Step(k, size()));
            if (step.signatures[sender] != null) {
                abortLocked("group " + name + ": protocol error: " + member(sender)
                        + " contributed twice to call #" + c.call());
                return;
            }
            step.signatures[sender] = c.signature();
            step.remote.set(sender, c.pieces());
            step.doneReading[sender] = true; // remote members read nothing here
            arrivedLocked(step);
        }
    }

    private void arrivedLocked(Step step) {
        step.arrived++;
        if (step.arrived == size()) {
            step.mismatch = mismatch(step);
            if (step.mismatch != null) {
                abortLocked(step.mismatch);
            } else {
                step.reading = localCount;
            }
        }
        lock.notifyAll();
    }

    /**
     * Phase 2: this member has read every deposit; waits until all local members have, so that
     * no member returns (and overwrites its input) while another still reads it.
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
     * Leaves {@code step} after an error while reading it and aborts the group; returns once
     * nobody reads this member's input any more.
     */
    void fail(Step step, int member, String op, Throwable error) {
        synchronized (lock) {
            abortLocked(prefix(member, op) + "failed: " + error);
            doneReadingLocked(step, member);
            awaitNoReaders(step);
            leaveLocked(step);
        }
    }

    /**
     * Queues {@code message} (a detached copy this object now owns) from {@code src} to local
     * {@code dst}; returns its ticket for {@link #awaitTaken}.
     */
    long post(int src, int dst, NDArray message) {
        synchronized (lock) {
            if (abortReason != null) {
                close(message);
                throw aborted(src, "send");
            }
            int box = src * size() + dst;
            mailboxes.get(box).addLast(message);
            lock.notifyAll();
            return ++posted[box];
        }
    }

    /** Waits until {@code dst} has taken the message from {@code src} with the given ticket. */
    void awaitTaken(int src, int dst, long ticket) {
        synchronized (lock) {
            int box = src * size() + dst;
            long deadline = System.nanoTime() + timeout.toNanos();
            while (taken[box] < ticket && abortReason == null) {
                if (!await(deadline, src, "send")) {
                    String message = prefix(src, "send") + "timed out after " + timeout.toMillis() + " ms"
                            + " waiting for " + member(dst) + " to receive (strict sends)";
                    abortLocked(message);
                    throw new CollectiveException(message);
                }
            }
            if (taken[box] < ticket) {
                throw aborted(src, "send");
            }
        }
    }

    /** Sends {@code message} from local {@code src} to remote {@code dst}. */
    void postRemote(int src, int dst, WireTensor message) {
        synchronized (lock) {
            if (abortReason != null) {
                throw aborted(src, "send");
            }
            mesh.send(nodes[dst], new Frame.Message(groupId, src, dst, message));
        }
    }

    /** A remote member's message arrived (called by a link's reader). */
    public void deliver(Frame.Message m) {
        synchronized (lock) {
            if (abortReason != null) {
                return;
            }
            int src = m.sender();
            int dst = m.receiver();
            if (src < 0 || src >= size() || dst < 0 || dst >= size() || local[src] || !local[dst]) {
                abortLocked("group " + name + ": protocol error: message from member " + src + " to " + dst);
                return;
            }
            mailboxes.get(src * size() + dst).addLast(m.tensor());
            lock.notifyAll();
        }
    }

    /**
     * Takes the oldest message from {@code src} to {@code dst}; the caller owns it: an
     * {@link NDArray} from a local sender, a {@link WireTensor} from a remote one.
     */
    Object take(int src, int dst) {
        synchronized (lock) {
            ArrayDeque<Object> box = mailboxes.get(src * size() + dst);
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
            taken[src * size() + dst]++;
            lock.notifyAll();
            return box.removeFirst();
        }
    }

    /**
     * Fails every pending and future call of every local member with {@code reason}; frees
     * queued messages. The first reason wins.
     */
    public void abort(String reason) {
        synchronized (lock) {
            abortLocked(reason);
        }
    }

    /** Frees everything still held; call once no member will use the group again. */
    public void dispose() {
        synchronized (lock) {
            for (Step step : steps.values()) {
                Arrays.stream(step.deposits).forEach(GroupCommunicator::close);
            }
            steps.clear();
            clearMailboxes();
        }
    }

    /** Error-message prefix naming the group, the member and the operation. */
    String prefix(int member, String op) {
        return "group " + name + ": " + member(member) + " " + op + ": ";
    }

    /** E.g. {@code "rank 1 (global 3)"}, with {@code " on node 1"} for a remote member. */
    String member(int member) {
        String s = "rank " + member + " (global " + globalRanks[member] + ")";
        return local[member] ? s : s + " on " + mesh.describe(nodes[member]);
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

    /** A local member leaves; the step goes once every local member has come and gone. */
    private void leaveLocked(Step step) {
        step.active--;
        if (step.active == 0 && (step.localArrived == localCount || abortReason != null)) {
            Arrays.stream(step.deposits).forEach(GroupCommunicator::close);
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
        return new CollectiveAbortedException("group " + name + ": " + member(member) + " " + op, abortReason);
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
        for (ArrayDeque<Object> box : mailboxes) {
            for (Object message : box) {
                if (message instanceof NDArray array) {
                    array.close();
                }
            }
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
