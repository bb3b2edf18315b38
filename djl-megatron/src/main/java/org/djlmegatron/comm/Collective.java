package org.djlmegatron.comm;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.DataType;
import java.util.ArrayList;
import java.util.List;

/**
 * What one collective call computes, independent of how the bytes travel: the piece each sender
 * contributes to each receiver, and how a receiver combines the pieces it got into its result.
 * Every backend (threads of one JVM, TCP between JVMs) uses these, so their results are
 * bit-identical: the same pieces combined by the same torch operations in group-rank order.
 */
sealed interface Collective {

    /** The operation's name for error messages, e.g. {@code "allReduce"}. */
    String name();

    /**
     * A description of the call that every member must agree on (operation, arguments, dtype,
     * shape), e.g. {@code "allReduce(SUM) float32 (2, 2)"}; {@code x} is null for a barrier.
     */
    String signature(NDArray x);

    /** Whether a sender contributes the same piece to every receiver (sent once per node). */
    boolean samePieceForEveryone();

    /**
     * The piece {@code sender} contributes to {@code receiver}: {@code input} itself, a view of it
     * (a new array the caller closes), or null when the receiver needs nothing from this sender.
     */
    NDArray piece(NDArray input, int sender, int receiver, int size);

    /**
     * The receiver's result from the pieces of every member, in group-rank order (null where
     * {@link #piece} gave null). The result is created by operations on the first piece and so
     * belongs to that piece's manager; the caller attaches it where it belongs.
     */
    NDArray combine(NDArray[] pieces, int receiver);

    /** Element-wise reduction of every member's input. */
    record AllReduce(ReduceOp op) implements Collective {
        @Override
        public String name() {
            return "allReduce";
        }

        @Override
        public String signature(NDArray x) {
            return "allReduce(" + op + ") " + describe(x);
        }

        @Override
        public boolean samePieceForEveryone() {
            return true;
        }

        @Override
        public NDArray piece(NDArray input, int sender, int receiver, int size) {
            return input;
        }

        @Override
        public NDArray combine(NDArray[] pieces, int receiver) {
            return reduce(pieces, op);
        }
    }

    /**
     * Element-wise reduction of every member's input, for member {@code root} only: every member
     * sends its whole input to the root and nothing to the others, which compute nothing and get
     * null. The root combines exactly as {@link AllReduce} does, so its result is bit-identical.
     */
    record Reduce(int root, ReduceOp op) implements Collective {
        @Override
        public String name() {
            return "reduce";
        }

        @Override
        public String signature(NDArray x) {
            return "reduce(root=" + root + ", " + op + ") " + describe(x);
        }

        @Override
        public boolean samePieceForEveryone() {
            return false; // only the root's node gets a piece
        }

        @Override
        public NDArray piece(NDArray input, int sender, int receiver, int size) {
            return receiver == root ? input : null;
        }

        @Override
        public NDArray combine(NDArray[] pieces, int receiver) {
            return receiver == root ? reduce(pieces, op) : null;
        }
    }

    /** Concatenation of every member's input along {@code axis} (non-negative). */
    record AllGather(int axis) implements Collective {
        @Override
        public String name() {
            return "allGather";
        }

        @Override
        public String signature(NDArray x) {
            return "allGather(axis=" + axis + ") " + describe(x);
        }

        @Override
        public boolean samePieceForEveryone() {
            return true;
        }

        @Override
        public NDArray piece(NDArray input, int sender, int receiver, int size) {
            return input;
        }

        @Override
        public NDArray combine(NDArray[] pieces, int receiver) {
            return concat(List.of(pieces), axis);
        }
    }

    /** Reduction of every member's chunk {@code receiver} along {@code axis}. */
    record ReduceScatter(int axis, ReduceOp op) implements Collective {
        @Override
        public String name() {
            return "reduceScatter";
        }

        @Override
        public String signature(NDArray x) {
            return "reduceScatter(axis=" + axis + ", " + op + ") " + describe(x);
        }

        @Override
        public boolean samePieceForEveryone() {
            return false;
        }

        @Override
        public NDArray piece(NDArray input, int sender, int receiver, int size) {
            return chunk(input, axis, receiver, size);
        }

        @Override
        public NDArray combine(NDArray[] pieces, int receiver) {
            return reduce(pieces, op);
        }
    }

    /** The input of member {@code root}. */
    record Broadcast(int root) implements Collective {
        @Override
        public String name() {
            return "broadcast";
        }

        @Override
        public String signature(NDArray x) {
            return "broadcast(root=" + root + ") " + describe(x);
        }

        @Override
        public boolean samePieceForEveryone() {
            return true;
        }

        @Override
        public NDArray piece(NDArray input, int sender, int receiver, int size) {
            return sender == root ? input : null;
        }

        @Override
        public NDArray combine(NDArray[] pieces, int receiver) {
            return pieces[root].duplicate();
        }
    }

    /** Chunk {@code receiver} (along {@code splitAxis}) of every member, concatenated. */
    record AllToAll(int splitAxis, int concatAxis) implements Collective {
        @Override
        public String name() {
            return "allToAll";
        }

        @Override
        public String signature(NDArray x) {
            return "allToAll(split=" + splitAxis + ", concat=" + concatAxis + ") " + describe(x);
        }

        @Override
        public boolean samePieceForEveryone() {
            return false;
        }

        @Override
        public NDArray piece(NDArray input, int sender, int receiver, int size) {
            return chunk(input, splitAxis, receiver, size);
        }

        @Override
        public NDArray combine(NDArray[] pieces, int receiver) {
            return concat(List.of(pieces), concatAxis);
        }
    }

    /** Nothing but the rendezvous. */
    record Barrier() implements Collective {
        @Override
        public String name() {
            return "barrier";
        }

        @Override
        public String signature(NDArray x) {
            return "barrier";
        }

        @Override
        public boolean samePieceForEveryone() {
            return true;
        }

        @Override
        public NDArray piece(NDArray input, int sender, int receiver, int size) {
            return null;
        }

        @Override
        public NDArray combine(NDArray[] pieces, int receiver) {
            return null;
        }
    }

    /** E.g. {@code "float32 (2, 2)"}. */
    static String describe(NDArray x) {
        return x.getDataType() + " " + x.getShape();
    }

    /**
     * Element-wise reduction of {@code parts} in index order. The result is created by ops on
     * {@code parts[0]} and so belongs to its manager.
     */
    private static NDArray reduce(NDArray[] parts, ReduceOp op) {
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

    /** Floats divide in their own type; integers divide in double and truncate toward zero. */
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
        return NDArrays.concat(new NDList(new ArrayList<>(parts)), axis); // on parts.get(0)'s manager
    }

    /** Chunk {@code index} of {@code size} equal chunks of {@code x} along {@code axis} (a view). */
    private static NDArray chunk(NDArray x, int axis, int index, int size) {
        NDList chunks = x.split(size, axis);
        NDArray wanted = chunks.get(index);
        for (int i = 0; i < chunks.size(); i++) {
            if (i != index) {
                chunks.get(i).close();
            }
        }
        return wanted;
    }
}
