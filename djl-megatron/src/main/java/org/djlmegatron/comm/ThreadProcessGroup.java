package org.djlmegatron.comm;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.NDScope;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.function.Function;

/**
 * A {@link ProcessGroup} whose members are threads of one JVM sharing host memory.
 *
 * <p>A collective is a rendezvous: every member deposits a detached view of its input (no copy),
 * waits until all have, computes its own result from the deposits in group-rank order (so every
 * member gets bit-identical results), then waits again until all have read, so that no member
 * returns and overwrites its input while another still reads it. Results are created from the
 * deposits and then attached to the caller's manager; they never require gradients.
 *
 * <p>{@link #send} copies its input into the pair's mailbox and returns at once (an eager send):
 * the caller may reuse {@code x} immediately, and patterns where every member sends before it
 * receives cannot deadlock. Messages between a pair are received in the order they were sent.
 *
 * <p>Integer {@link ReduceOp#AVG} divides in double precision and truncates toward zero.
 */
public final class ThreadProcessGroup implements ProcessGroup {

    private final ThreadCommunicator comm;
    private final int rank;

    private ThreadProcessGroup(ThreadCommunicator comm, int rank) {
        this.comm = comm;
        this.rank = rank;
    }

    /**
     * Creates one group and returns its members, in group-rank order; hand member {@code i} to
     * the thread playing group rank {@code i}.
     *
     * @param name the group's name for error messages, e.g. {@code "tp[0,1]"}
     * @param globalRanks the global ranks of the members, in group-rank order
     * @param timeout the limit for every wait inside a call
     * @return the members
     */
    public static List<ThreadProcessGroup> newGroup(String name, int[] globalRanks, Duration timeout) {
        if (globalRanks.length == 0) {
            throw new IllegalArgumentException("group " + name + " has no members");
        }
        ThreadCommunicator comm = new ThreadCommunicator(name, globalRanks, timeout);
        List<ThreadProcessGroup> members = new ArrayList<>(globalRanks.length);
        for (int i = 0; i < globalRanks.length; i++) {
            members.add(new ThreadProcessGroup(comm, i));
        }
        return Collections.unmodifiableList(members);
    }

    /**
     * Fails every pending and future call of every member of this group with a
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
        if (size() == 1) {
            return copy(x);
        }
        String sig = "allReduce(" + op + ") " + describe(x);
        return collective("allReduce", sig, x, d -> own(reduce(d, op), x));
    }

    @Override
    public NDArray allGather(NDArray x, int axis) {
        int a = axis(x, axis, "allGather");
        if (size() == 1) {
            return copy(x);
        }
        String sig = "allGather(axis=" + a + ") " + describe(x);
        return collective("allGather", sig, x, d -> own(concat(Arrays.asList(d), a), x));
    }

    @Override
    public NDArray reduceScatter(NDArray x, int axis, ReduceOp op) {
        int a = axis(x, axis, "reduceScatter");
        requireDivisible(x, a, "reduceScatter");
        if (size() == 1) {
            return copy(x);
        }
        String sig = "reduceScatter(axis=" + a + ", " + op + ") " + describe(x);
        return collective("reduceScatter", sig, x, d -> {
            NDArray[] mine = new NDArray[d.length];
            try {
                for (int j = 0; j < d.length; j++) {
                    mine[j] = chunk(d[j], a, rank);
                }
                return own(reduce(mine, op), x);
            } finally {
                closeAll(mine);
            }
        });
    }

    @Override
    public NDArray broadcast(NDArray x, int root) {
        if (root < 0 || root >= size()) {
            throw new IllegalArgumentException(comm.prefix(rank, "broadcast")
                    + "root " + root + " is outside the group of " + size());
        }
        if (size() == 1) {
            return copy(x);
        }
        String sig = "broadcast(root=" + root + ") " + describe(x);
        return collective("broadcast", sig, x, d -> own(d[root].duplicate(), x));
    }

    @Override
    public NDArray allToAll(NDArray x, int splitAxis, int concatAxis) {
        int sa = axis(x, splitAxis, "allToAll");
        int ca = axis(x, concatAxis, "allToAll");
        requireDivisible(x, sa, "allToAll");
        if (size() == 1) {
            return copy(x);
        }
        String sig = "allToAll(split=" + sa + ", concat=" + ca + ") " + describe(x);
        return collective("allToAll", sig, x, d -> {
            List<NDArray> received = new ArrayList<>(d.length);
            try {
                for (NDArray from : d) {
                    received.add(chunk(from, sa, rank));
                }
                return own(concat(received, ca), x);
            } finally {
                closeAll(received.toArray(new NDArray[0]));
            }
        });
    }

    @Override
    public void send(NDArray x, int dst) {
        checkPeer(dst, "send");
        NDArray message = copy(x);
        message.detach(); // owned by the mailbox until the receiver attaches it
        NDScope.unregister(message);
        comm.post(rank, dst, message);
    }

    @Override
    public NDArray recv(NDManager manager, Shape shape, DataType dataType, int src) {
        checkPeer(src, "recv");
        NDArray message = comm.take(src, rank);
        if (!message.getShape().equals(shape) || message.getDataType() != dataType) {
            String error = comm.prefix(rank, "recv") + "expected " + dataType + " " + shape
                    + " from " + comm.member(src) + " but it sent " + describe(message);
            message.close();
            comm.abort(error);
            throw new CollectiveException(error);
        }
        message.attach(manager);
        return message;
    }

    @Override
    public void barrier() {
        if (size() > 1) {
            collective("barrier", "barrier", null, d -> null);
        }
    }

    @Override
    public String toString() {
        return "ThreadProcessGroup[" + name() + ", rank " + rank + "]";
    }

    /** Runs one rendezvous: deposit, wait for all, compute from the deposits, wait for all. */
    private <R> R collective(String op, String signature, NDArray x, Function<NDArray[], R> compute) {
        NDArray deposit = null;
        if (x != null) {
            // A detached view: shares x's storage (no copy) but belongs to no manager and no
            // autograd graph, so readers neither free it nor link graphs across ranks.
            deposit = x.stopGradient();
            deposit.detach();
            NDScope.unregister(deposit);
        }
        ThreadCommunicator.Step step = comm.arrive(rank, op, signature, deposit);
        R result;
        try {
            result = compute.apply(step.deposits());
        } catch (RuntimeException | Error e) {
            comm.fail(step, rank, op, e);
            throw e;
        }
        try {
            comm.finish(step, rank, op);
        } catch (CollectiveException e) {
            if (result instanceof NDArray array) {
                array.close();
            }
            throw e;
        }
        return result;
    }

    /**
     * Element-wise reduction of {@code parts} in index order. The result is created by ops on
     * {@code parts[0]} and so belongs to its manager; the caller re-attaches it.
     */
    private NDArray reduce(NDArray[] parts, ReduceOp op) {
        NDArray acc = parts[0].duplicate();
        for (int j = 1; j < parts.length; j++) {
            switch (op) {
                case SUM, AVG -> acc.addi(parts[j]);
                case MAX -> acc = replace(acc, acc.maximum(parts[j]));
                case MIN -> acc = replace(acc, acc.minimum(parts[j]));
            }
        }
        if (op == ReduceOp.AVG) {
            acc = average(acc, parts.length);
        }
        return acc;
    }

    private static NDArray average(NDArray sum, int count) {
        DataType type = sum.getDataType();
        if (type.isFloating()) {
            return sum.divi(count);
        }
        // torch's division of integers yields floats; divide in double, truncate back
        try (NDArray wide = sum.toType(DataType.FLOAT64, false)) {
            wide.divi(count);
            return replace(sum, wide.toType(type, false));
        }
    }

    private static NDArray replace(NDArray old, NDArray next) {
        old.close();
        return next;
    }

    private static NDArray concat(List<NDArray> parts, int axis) {
        return NDArrays.concat(new NDList(parts), axis); // belongs to parts.get(0)'s manager
    }

    /** Chunk {@code index} of {@code size()} equal chunks of {@code x} along {@code axis} (a view). */
    private NDArray chunk(NDArray x, int axis, int index) {
        NDList chunks = x.split(size(), axis);
        NDArray wanted = chunks.get(index);
        for (int i = 0; i < chunks.size(); i++) {
            if (i != index) {
                chunks.get(i).close();
            }
        }
        return wanted;
    }

    /** Attaches a result computed from the deposits to the manager of the caller's input. */
    private static NDArray own(NDArray result, NDArray callerInput) {
        result.attach(callerInput.getManager());
        return result;
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

    private void checkPeer(int peer, String op) {
        if (peer < 0 || peer >= size() || peer == rank) {
            throw new IllegalArgumentException(comm.prefix(rank, op) + "peer " + peer
                    + " must be another member of the group of " + size());
        }
    }

    private static String describe(NDArray x) {
        return x.getDataType() + " " + x.getShape();
    }

    private static void closeAll(NDArray[] arrays) {
        for (NDArray a : arrays) {
            if (a != null) {
                a.close();
            }
        }
    }
}
