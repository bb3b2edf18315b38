package org.djlmegatron.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Parameter;

/**
 * A parameter with what tensor parallelism needs to know about it: the full (unsharded) shape,
 * how it is split, and whether its gradient is a partial sum over the tensor-parallel group
 * (replicated parameters applied to sequence-parallel activations).
 *
 * @param name Megatron-Core state-dict name, e.g. {@code decoder.layers.0.mlp.linear_fc1.weight}
 * @param parameter the DJL parameter holding this rank's shard
 * @param fullShape shape of the unsharded tensor
 * @param layout how the full tensor is split
 * @param tpRank this rank's index in the tensor-parallel group
 * @param tpSize tensor-parallel group size
 * @param tpPartialGrad whether this rank's gradient is a partial sum that must be all-reduced over the TP group (replicated weights that see only part of the sequence, of the heads, or of the expert outputs)
 * @param init how the full tensor is initialised from scratch
 */
public record ShardedParameter(
        String name,
        Parameter parameter,
        Shape fullShape,
        ShardLayout layout,
        int tpRank,
        int tpSize,
        boolean tpPartialGrad,
        Init init) {

    /** Initialisation of a full tensor. */
    public enum Init {
        NORMAL,
        ZEROS,
        ONES
    }

    /** Shape of this rank's shard. */
    public Shape localShape() {
        long[] dims = fullShape.getShape().clone(); // Shape hands out its own array
        switch (layout) {
            case SPLIT_ROWS:
            case SPLIT_ROWS_GATED:
                dims[0] /= tpSize;
                break;
            case SPLIT_COLUMNS:
                dims[1] /= tpSize;
                break;
            default:
                break;
        }
        return new Shape(dims);
    }

    /** This rank's shard of a full tensor (a view or a new array in the full tensor's manager). */
    public NDArray shardOf(NDArray full) {
        if (!full.getShape().equals(fullShape)) {
            throw new IllegalArgumentException(
                    name + ": expected full shape " + fullShape + ", found " + full.getShape());
        }
        long rows = fullShape.get(0);
        switch (layout) {
            case SPLIT_ROWS:
                return rows(full, rows / tpSize * tpRank, rows / tpSize);
            case SPLIT_COLUMNS:
                long cols = fullShape.get(1) / tpSize;
                return full.get(new NDIndex(":, {}:{}", cols * tpRank, cols * (tpRank + 1)));
            case SPLIT_ROWS_GATED:
                long half = rows / 2;
                long chunk = half / tpSize;
                return NDArrays.concat(
                        new NDList(
                                rows(full, chunk * tpRank, chunk),
                                rows(full, half + chunk * tpRank, chunk)));
            default:
                return full;
        }
    }

    /**
     * The full tensor from every rank's shard (in TP-rank order), the inverse of {@link #shardOf}.
     * A replicated parameter returns rank 0's copy.
     */
    public static NDArray assemble(ShardLayout layout, java.util.List<NDArray> shards) {
        NDList list = new NDList(shards.toArray(new NDArray[0]));
        switch (layout) {
            case SPLIT_ROWS:
                return NDArrays.concat(list, 0);
            case SPLIT_COLUMNS:
                return NDArrays.concat(list, 1);
            case SPLIT_ROWS_GATED:
                NDList gates = new NDList();
                NDList ups = new NDList();
                for (NDArray s : shards) {
                    NDList halves = s.split(2, 0);
                    gates.add(halves.get(0));
                    ups.add(halves.get(1));
                }
                return NDArrays.concat(new NDList(NDArrays.concat(gates, 0), NDArrays.concat(ups, 0)), 0);
            default:
                return shards.get(0);
        }
    }

    private static NDArray rows(NDArray full, long start, long length) {
        return full.get(new NDIndex("{}:{}", start, start + length));
    }
}
