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
