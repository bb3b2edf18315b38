package org.djlmegatron.comm;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;

/**
 * A group of ranks as seen by one of its members. Every member must call the same collectives
 * in the same order. Results are new arrays attached to the manager of the caller's input (the
 * caller's own rank); inputs are never modified. Reductions combine contributions in group-rank
 * order, so every member gets bit-identical results. Every blocking call has a timeout and fails
 * with a {@link CollectiveException} naming the group, the rank and the operation.
 */
public interface ProcessGroup {

    /** The group's name, e.g. {@code "tp[0,1]"}; used in error messages. */
    String name();

    /** Number of ranks in the group. */
    int size();

    /** This member's rank inside the group, {@code 0 <= rank() < size()}. */
    int rank();

    /** The global ranks of the members, in group-rank order. */
    int[] globalRanks();

    /** Element-wise reduction of every member's {@code x} (same shape and dtype everywhere). */
    NDArray allReduce(NDArray x, ReduceOp op);

    /**
     * Element-wise reduction of every member's {@code x} (same shape and dtype everywhere), delivered to group rank
     * {@code root} only: there a new array (attached as allReduce's results are), elsewhere null. Contributions are
     * combined in group-rank order, so the root's result is bit-identical to allReduce's.
     */
    default NDArray reduce(NDArray x, int root, ReduceOp op) { NDArray r = allReduce(x, op); if (rank() == root) return r; r.close(); return null; }

    /** Concatenation of every member's {@code x} along {@code axis}, in group-rank order. */
    NDArray allGather(NDArray x, int axis);

    /**
     * Sum-reduces every member's {@code x} and returns this member's slice along {@code axis}
     * (the axis length must be divisible by the group size).
     */
    NDArray reduceScatter(NDArray x, int axis, ReduceOp op);

    /** Returns the value of {@code x} held by group rank {@code root} (others pass same-shape x). */
    NDArray broadcast(NDArray x, int root);

    /**
     * Splits {@code x} into {@code size()} equal chunks along {@code splitAxis}, sends chunk j to
     * member j, and returns the received chunks concatenated along {@code concatAxis} in
     * group-rank order.
     */
    NDArray allToAll(NDArray x, int splitAxis, int concatAxis);

    /**
     * Variable-split all-to-all along axis 0: sends rows {@code [sum(sendCounts[0..j)),
     * sum(sendCounts[0..j]))} of {@code x} to member j and returns the rows received from every
     * member, concatenated in group-rank order. Every member must pass the counts it sends;
     * {@code recvCounts[j]} is what member j sends to this one (the caller knows it, e.g. from an
     * all-gathered count matrix). By default built on the equal-split {@link #allToAll}: each
     * chunk is zero-padded to the largest count in the exchange ({@code maxCount}, the same on
     * every member), so it runs on every backend; the padding costs bandwidth, not correctness.
     * The NCCL group overrides it with grouped sends and receives of the exact counts.
     */
    default NDArray allToAllV(NDArray x, long[] sendCounts, long[] recvCounts, long maxCount) {
        int n = size();
        if (sendCounts.length != n || recvCounts.length != n) {
            throw new IllegalArgumentException(name() + ": allToAllV needs " + n + " send and receive counts, got "
                    + sendCounts.length + " and " + recvCounts.length);
        }
        long total = 0;
        for (long c : sendCounts) {
            total += c;
        }
        if (total != x.getShape().get(0)) {
            throw new IllegalArgumentException(name() + ": allToAllV send counts sum to " + total + " but x has "
                    + x.getShape().get(0) + " rows");
        }
        ai.djl.ndarray.NDManager m = x.getManager();
        long[] rowShape = x.getShape().slice(1).getShape();
        if (maxCount == 0) {
            long[] empty = new long[rowShape.length + 1];
            System.arraycopy(rowShape, 0, empty, 1, rowShape.length);
            return m.zeros(new Shape(empty), x.getDataType());
        }
        NDList chunks = new NDList(2 * n);
        long start = 0;
        for (int j = 0; j < n; j++) {
            long c = sendCounts[j];
            if (c > 0) {
                chunks.add(x.get(new ai.djl.ndarray.index.NDIndex("{}:{}", start, start + c)));
            }
            if (c < maxCount) {
                long[] pad = new long[rowShape.length + 1];
                pad[0] = maxCount - c;
                System.arraycopy(rowShape, 0, pad, 1, rowShape.length);
                chunks.add(m.zeros(new Shape(pad), x.getDataType()));
            }
            start += c;
        }
        NDArray padded = chunks.size() == 1 ? chunks.get(0) : ai.djl.ndarray.NDArrays.concat(chunks);
        NDArray received = allToAll(padded, 0, 0);
        NDList pieces = new NDList(n);
        for (int j = 0; j < n; j++) {
            if (recvCounts[j] > 0) {
                pieces.add(received.get(new ai.djl.ndarray.index.NDIndex("{}:{}", j * maxCount,
                        j * maxCount + recvCounts[j])));
            }
        }
        if (pieces.isEmpty()) {
            long[] empty = new long[rowShape.length + 1];
            System.arraycopy(rowShape, 0, empty, 1, rowShape.length);
            return m.zeros(new Shape(empty), x.getDataType());
        }
        return pieces.size() == 1 ? pieces.get(0) : ai.djl.ndarray.NDArrays.concat(pieces);
    }

    /** Sends {@code x} to group rank {@code dst}; returns once the receiver has a copy. */
    void send(NDArray x, int dst);

    /** Receives an array of the given shape and dtype from group rank {@code src}. */
    NDArray recv(ai.djl.ndarray.NDManager manager, Shape shape, DataType dataType, int src);

    /**
     * Sends {@code x} to {@code dst} and receives from {@code src} as one batched exchange (as
     * Megatron's batched isend/irecv): the send is posted before the receive waits, so two
     * members exchanging with each other cannot deadlock even when sends are rendezvous.
     */
    default NDArray sendRecv(NDArray x, int dst, ai.djl.ndarray.NDManager manager, Shape shape,
            DataType dataType, int src) {
        send(x, dst);
        return recv(manager, shape, dataType, src);
    }

    /**
     * Megatron's {@code batch_isend_irecv}: sends {@code sends[i]} to {@code dsts[i]} and receives
     * one array of {@code shape}/{@code dataType} from each {@code srcs[j]}, as one batched
     * exchange that completes when all of them have: every send is posted before any receive
     * waits, so neighbours exchanging in both directions cannot deadlock even when sends are
     * rendezvous. Between a pair, messages match in posting order. Returns the received arrays
     * in the order of {@code srcs}.
     */
    default NDArray[] batchSendRecv(NDArray[] sends, int[] dsts, ai.djl.ndarray.NDManager manager, Shape shape,
            DataType dataType, int[] srcs) {
        for (int i = 0; i < sends.length; i++) {
            send(sends[i], dsts[i]); // eager backends: a send never waits for its receive
        }
        NDArray[] received = new NDArray[srcs.length];
        for (int j = 0; j < srcs.length; j++) {
            received[j] = recv(manager, shape, dataType, srcs[j]);
        }
        return received;
    }

    /** Waits until every member has arrived. */
    void barrier();

    /** Convenience: all-gathers every element of a list along {@code axis}. */
    default NDList allGather(NDList xs, int axis) {
        NDList out = new NDList(xs.size());
        for (NDArray x : xs) {
            out.add(allGather(x, axis));
        }
        return out;
    }
}
