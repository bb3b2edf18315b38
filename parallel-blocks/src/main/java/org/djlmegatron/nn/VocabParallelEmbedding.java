package org.djlmegatron.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.ndarray.types.SparseFormat;
import ai.djl.nn.Parameter;
import org.djlmegatron.parallel.RankContext;

/**
 * Token embedding with the vocabulary split across the tensor-parallel group: rank r holds rows
 * {@code [r*V/tp, (r+1)*V/tp)}, looks up the tokens it owns, zeroes the others, and the group
 * sums the partial results. Output {@code [batch, seq, hidden]}, replicated (before any
 * sequence-parallel scatter, which the model applies).
 */
public final class VocabParallelEmbedding extends ParallelBlock {

    private final Parameter weight;
    private final long vocabStart;
    private final long vocabEnd;

    public VocabParallelEmbedding(RankContext ctx, long vocabSize, long hidden) {
        super(ctx);
        int tpSize = tp.group().size();
        if (vocabSize % tpSize != 0) {
            throw new IllegalArgumentException("vocabulary size " + vocabSize
                    + " is not divisible by the tensor-parallel size " + tpSize);
        }
        weight = param("weight", new Shape(vocabSize, hidden), ShardLayout.SPLIT_ROWS, false,
                ShardedParameter.Init.NORMAL);
        long per = vocabSize / tpSize;
        vocabStart = per * tp.group().rank();
        vocabEnd = vocabStart + per;
    }

    /** Partial (unreduced) embedding of {@code ids [batch, seq]} (int64). */
    public NDArray partial(NDArray ids) {
        NDArray w = value(weight, ids);
        if (!tp.isParallel()) {
            return lookup(ids, w);
        }
        NDArray outside = ids.lt(vocabStart).logicalOr(ids.gte(vocabEnd));
        NDArray local = ids.sub(vocabStart).mul(outside.logicalNot().toType(DataType.INT64, false));
        NDArray keep = outside.logicalNot().toType(w.getDataType(), false).expandDims(-1);
        return lookup(local, w).mul(keep);
    }

    @Override
    public NDArray apply(NDArray ids) {
        return tp.reduceFromRegion(partial(ids));
    }

    public Parameter weight() {
        return weight;
    }

    private static NDArray lookup(NDArray ids, NDArray w) {
        return ids.getNDArrayInternal().embedding(ids, w, SparseFormat.DENSE).singletonOrThrow();
    }

    @Override
    public Shape[] getOutputShapes(Shape[] inputShapes) {
        return new Shape[] {inputShapes[0].add(weight.getArray().getShape().get(1))};
    }
}
