package org.djlmegatron.comm;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.NDScope;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.List;
import java.util.Map;

/**
 * One member's handle on a group backed by a {@link GroupCommunicator}: checks the arguments,
 * describes the call as a {@link Collective} and runs it. The backends differ only in where the
 * other members live, so they share this code and compute bit-identical results.
 *
 * <p>Results are created from the contributions and then attached to the caller's manager; they
 * never require gradients. {@link #send} is eager: it copies its input (into the receiver's
 * mailbox, or onto the wire) and returns at once, so patterns where every member sends before it
 * receives cannot deadlock. Messages between a pair are received in the order they were sent.
 *
 * <p>Integer {@link ReduceOp#AVG} divides in double precision and truncates toward zero.
 *
 * <p>Public only for the launcher ({@code org.djlmegatron.launch.DistributedWorld}), which sits above
 * the rank grid and so outside this package; not an API for model code.
 */
public abstract sealed class GroupMember implements ProcessGroup permits ThreadProcessGroup, DistributedProcessGroup {

    final GroupCommunicator comm;
    private final int rank;

    GroupMember(GroupCommunicator comm, int rank) {
        if (!comm.isLocal(rank)) {
            throw new IllegalArgumentException("member " + rank + " of " + comm.name() + " is not in this JVM");
        }
        this.comm = comm;
        this.rank = rank;
    }

    /** The group's shared communicator; public for the launcher ({@code launch.DistributedWorld}), which wires and disposes it. */
    public GroupCommunicator communicator() {
        return comm;
    }

    /**
     * Fails every pending and future call of every member of this group in this JVM with a
     * {@link CollectiveException} that carries {@code reason}. Safe to call from any thread.
     */
    public void abort(String reason) {
        comm.abort(reason);
    }

    /** Frees messages and deposits still held; call once no member uses the group any more. */
    void dispose() {
        comm.dispose();
    }

    @Override
    public String name() {
        return comm.name();
    }

    @Override
    public int size() {
        return comm.size();
    }

    @Override
    public int rank() {
        return rank;
    }

    @Override
    public int[] globalRanks() {
        return comm.globalRanks();
    }

    @Override
    public NDArray allReduce(NDArray x, ReduceOp op) {
        return size() == 1 ? copy(x) : collective(new Collective.AllReduce(op), x);
    }

    /** Non-roots send their input to the root (over the wire only to the root's node) and compute nothing. */
    @Override
    public NDArray reduce(NDArray x, int root, ReduceOp op) {
        checkRoot(root, "reduce");
        return size() == 1 ? copy(x) : collective(new Collective.Reduce(root, op), x);
    }

    @Override
    public NDArray allGather(NDArray x, int axis) {
        int a = axis(x, axis, "allGather");
        return size() == 1 ? copy(x) : collective(new Collective.AllGather(a), x);
    }

    @Override
    public NDArray reduceScatter(NDArray x, int axis, ReduceOp op) {
        int a = axis(x, axis, "reduceScatter");
        requireDivisible(x, a, "reduceScatter");
        return size() == 1 ? copy(x) : collective(new Collective.ReduceScatter(a, op), x);
    }

    @Override
    public NDArray broadcast(NDArray x, int root) {
        checkRoot(root, "broadcast");
        return size() == 1 ? copy(x) : collective(new Collective.Broadcast(root), x);
    }

    @Override
    public NDArray allToAll(NDArray x, int splitAxis, int concatAxis) {
        int sa = axis(x, splitAxis, "allToAll");
        int ca = axis(x, concatAxis, "allToAll");
        requireDivisible(x, sa, "allToAll");
        return size() == 1 ? copy(x) : collective(new Collective.AllToAll(sa, ca), x);
    }

    @Override
    public void barrier() {
        if (size() > 1) {
            collective(new Collective.Barrier(), null);
        }
    }

    @Override
    public void send(NDArray x, int dst) {
        checkPeer(dst, "send");
        if (!comm.isLocal(dst)) {
            WireTensor message;
            try (NDArray view = x.stopGradient()) {
                message = WireTensor.of(view);
            }
            comm.postRemote(rank, dst, message);
            return;
        }
        long ticket = postLocal(x, dst);
        if (comm.strictSends()) {
            comm.awaitTaken(rank, dst, ticket);
        }
    }

    private long postLocal(NDArray x, int dst) {
        NDArray message = copy(x);
        message.detach(); // owned by the mailbox until the receiver attaches it
        NDScope.unregister(message);
        return comm.post(rank, dst, message);
    }

    @Override
    public NDArray sendRecv(NDArray x, int dst, NDManager manager, Shape shape, DataType dataType, int src) {
        checkPeer(dst, "send");
        if (!comm.isLocal(dst)) {
            send(x, dst);
            return recv(manager, shape, dataType, src);
        }
        long ticket = postLocal(x, dst);
        NDArray received = recv(manager, shape, dataType, src);
        if (comm.strictSends()) {
            comm.awaitTaken(rank, dst, ticket);
        }
        return received;
    }

    @Override
    public NDArray[] batchSendRecv(NDArray[] sends, int[] dsts, NDManager manager, Shape shape, DataType dataType,
            int[] srcs) {
        long[] tickets = new long[sends.length];
        for (int i = 0; i < sends.length; i++) { // post every send first: none waits yet
            checkPeer(dsts[i], "send");
            if (comm.isLocal(dsts[i])) {
                tickets[i] = postLocal(sends[i], dsts[i]);
            } else {
                send(sends[i], dsts[i]);
                tickets[i] = -1;
            }
        }
        NDArray[] received = new NDArray[srcs.length];
        for (int j = 0; j < srcs.length; j++) {
            received[j] = recv(manager, shape, dataType, srcs[j]);
        }
        if (comm.strictSends()) {
            for (int i = 0; i < sends.length; i++) {
                if (tickets[i] >= 0) {
                    comm.awaitTaken(rank, dsts[i], tickets[i]);
                }
            }
        }
        return received;
    }

    @Override
    public NDArray recv(NDManager manager, Shape shape, DataType dataType, int src) {
        checkPeer(src, "recv");
        Object message = comm.take(src, rank);
        if (message instanceof WireTensor wire) {
            if (!wire.shape().equals(shape) || wire.type() != dataType) {
                throw wrongMessage(shape, dataType, src, wire.describe());
            }
            return wire.toArray(manager);
        }
        NDArray array = (NDArray) message;
        if (!array.getShape().equals(shape) || array.getDataType() != dataType) {
            String sent = Collective.describe(array);
            array.close();
            throw wrongMessage(shape, dataType, src, sent);
        }
        array.attach(manager);
        return array;
    }

    private CollectiveException wrongMessage(Shape shape, DataType dataType, int src, String sent) {
        String error = comm.prefix(rank, "recv") + "expected " + dataType + " " + shape
                + " from " + comm.member(src) + " but it sent " + sent;
        comm.abort(error);
        return new CollectiveException(error);
    }

    /**
     * Runs one collective call: deposit, send the pieces remote members need, wait for everyone,
     * combine the pieces in group-rank order, wait for the local readers.
     */
    private NDArray collective(Collective op, NDArray x) {
        String signature = op.signature(x);
        NDArray deposit = null;
        Map<Integer, List<Frame.Piece>> outgoing;
        if (x != null) {
            // A detached view: shares x's storage (no copy) but belongs to no manager and no
            // autograd graph, so readers neither free it nor link graphs across ranks.
            deposit = x.stopGradient();
            deposit.detach();
            NDScope.unregister(deposit);
        }
        try {
            outgoing = comm.outgoing(op, deposit, rank);
        } catch (RuntimeException | Error e) {
            if (deposit != null) {
                deposit.close();
            }
            throw e;
        }
        GroupCommunicator.Step step = comm.arrive(rank, op.name(), signature, deposit, outgoing);
        NDArray result;
        try {
            result = combine(op, step, x);
        } catch (RuntimeException | Error e) {
            comm.fail(step, rank, op.name(), e);
            throw e;
        }
        try {
            comm.finish(step, rank, op.name());
        } catch (CollectiveException e) {
            if (result != null) {
                result.close();
            }
            throw e;
        }
        return result;
    }

    /** This member's result, attached to the manager of {@code x} (null for a barrier). */
    private NDArray combine(Collective op, GroupCommunicator.Step step, NDArray x) {
        int n = size();
        NDArray[] pieces = new NDArray[n];
        NDManager scratch = null; // holds pieces made from remote bytes
        try {
            for (int j = 0; j < n; j++) {
                if (comm.isLocal(j)) {
                    NDArray deposit = step.deposit(j);
                    pieces[j] = deposit == null ? null : op.piece(deposit, j, rank, n);
                } else {
                    WireTensor wire = step.remotePiece(j, rank);
                    if (wire != null) {
                        if (scratch == null) {
                            scratch = x.getManager().newSubManager();
                        }
                        pieces[j] = wire.toArray(scratch);
                    }
                }
            }
            NDArray result = op.combine(pieces, rank);
            if (result != null) {
                result.attach(x.getManager());
            }
            return result;
        } finally {
            for (int j = 0; j < n; j++) {
                // views made by op.piece; deposits stay with the communicator
                if (pieces[j] != null && comm.isLocal(j) && pieces[j] != step.deposit(j)) {
                    pieces[j].close();
                }
            }
            if (scratch != null) {
                scratch.close();
            }
        }
    }

    /** A copy of {@code x} on x's manager that does not require gradients. */
    private static NDArray copy(NDArray x) {
        try (NDArray view = x.stopGradient()) {
            return view.duplicate();
        }
    }

    private int axis(NDArray x, int axis, String op) {
        int dims = x.getShape().dimension();
        int a = axis < 0 ? axis + dims : axis;
        if (a < 0 || a >= dims) {
            throw new IllegalArgumentException(comm.prefix(rank, op)
                    + "axis " + axis + " is out of range for shape " + x.getShape());
        }
        return a;
    }

    private void requireDivisible(NDArray x, int axis, String op) {
        long length = x.getShape().get(axis);
        if (length % size() != 0) {
            throw new IllegalArgumentException(comm.prefix(rank, op) + "axis " + axis + " of shape "
                    + x.getShape() + " has length " + length
                    + ", not divisible by the group size " + size());
        }
    }

    private void checkRoot(int root, String op) {
        if (root < 0 || root >= size()) {
            throw new IllegalArgumentException(comm.prefix(rank, op)
                    + "root " + root + " is outside the group of " + size());
        }
    }

    private void checkPeer(int peer, String op) {
        if (peer < 0 || peer >= size() || peer == rank) {
            throw new IllegalArgumentException(comm.prefix(rank, op) + "peer " + peer
                    + " must be another member of the group of " + size());
        }
    }
}
