package org.djlmegatron.comm.nccl;

import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.Arrays;
import org.djlmegatron.comm.ReduceOp;

/**
 * A call as a fixed number of longs (operation, two arguments, dtype, shape), so that members can
 * compare their calls with one small all-gather over the CPU group before NCCL runs: NCCL itself
 * would hang or compute garbage on mismatched calls. Described as the other backends describe
 * calls, e.g. {@code "allReduce(SUM) float32 (2, 2)"}.
 */
final class CallSignature {

    static final int LONGS = 16;
    /** Dimensions stored one by one; the rest are folded into the last slot. */
    private static final int DIMS = LONGS - 6;

    enum Kind { ALL_REDUCE, ALL_GATHER, REDUCE_SCATTER, BROADCAST, ALL_TO_ALL, BARRIER, MESSAGE, ALL_TO_ALL_V, REDUCE }

    private CallSignature() {}

    static long[] encode(Kind kind, long arg0, long arg1, DataType type, Shape shape) {
        long[] s = new long[LONGS];
        s[0] = kind.ordinal();
        s[1] = arg0;
        s[2] = arg1;
        if (shape != null) {
            long[] dims = shape.getShape();
            s[3] = type.ordinal();
            s[4] = dims.length;
            for (int i = 0; i < dims.length && i < DIMS; i++) {
                s[5 + i] = dims[i];
            }
            if (dims.length > DIMS) {
                s[LONGS - 1] = Arrays.hashCode(Arrays.copyOfRange(dims, DIMS, dims.length));
            }
        }
        return s;
    }

    /** E.g. {@code "reduceScatter(axis=1, SUM) float16 (2, 8)"}. */
    static String describe(long[] s) {
        Kind kind = Kind.values()[(int) s[0]];
        String call = switch (kind) {
            case ALL_REDUCE -> "allReduce(" + ReduceOp.values()[(int) s[1]] + ")";
            case ALL_GATHER -> "allGather(axis=" + s[1] + ")";
            case REDUCE_SCATTER -> "reduceScatter(axis=" + s[1] + ", " + ReduceOp.values()[(int) s[2]] + ")";
            case BROADCAST -> "broadcast(root=" + s[1] + ")";
            case ALL_TO_ALL -> "allToAll(split=" + s[1] + ", concat=" + s[2] + ")";
            case BARRIER -> "barrier";
            case MESSAGE -> "message";
            case ALL_TO_ALL_V -> "allToAllV rows of";
            case REDUCE -> "reduce(root=" + s[1] + ", " + ReduceOp.values()[(int) s[2]] + ")";
        };
        return kind == Kind.BARRIER ? call : call + " " + tensor(s);
    }

    /** E.g. {@code "float32 (2, 2)"}. */
    static String tensor(long[] s) {
        int rank = (int) s[4];
        long[] dims = new long[Math.min(rank, DIMS)];
        System.arraycopy(s, 5, dims, 0, dims.length);
        String shape = new Shape(dims).toString();
        if (rank > DIMS) {
            shape = shape.substring(0, shape.length() - 1) + ", ...)";
        }
        return DataType.values()[(int) s[3]] + " " + shape;
    }
}
