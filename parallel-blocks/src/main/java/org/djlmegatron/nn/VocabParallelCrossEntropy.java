package org.djlmegatron.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import org.djlmegatron.autograd.RegionMappings;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.engine.Cast;

/**
 * Cross-entropy over logits whose vocabulary is split across the tensor-parallel group (as
 * Megatron's {@code vocab_parallel_cross_entropy}): no rank ever holds full-vocabulary logits.
 * The max, the target logit and the sum of exponentials are reduced over the group; the last two
 * through identity-backward reductions, so autograd gives each rank the gradient of its shard.
 */
public final class VocabParallelCrossEntropy {

    /** Labels below zero (Hugging Face uses -100) are ignored. */
    public static final long IGNORE_BELOW = 0;

    private final RegionMappings tp;

    public VocabParallelCrossEntropy(RegionMappings tp) {
        this.tp = tp;
    }

    /**
     * Per-token losses {@code [batch, seq]} (fp32) for local logits {@code [batch, seq, V/tp]} and
     * global label ids {@code [batch, seq]}; ignored positions give 0.
     */
    public NDArray tokenLosses(NDArray localLogits, NDArray labels) {
        NDArray logits = Cast.to(localLogits, DataType.FLOAT32);
        long part = logits.getShape().get(logits.getShape().dimension() - 1);
        long start = part * tp.group().rank();

        NDArray max = logits.stopGradient().max(new int[] {-1}, true);
        if (tp.isParallel()) {
            max = tp.group().allReduce(max, ReduceOp.MAX);
        }
        NDArray shifted = logits.sub(max);

        NDArray inRange = labels.gte(start).logicalAnd(labels.lt(start + part));
        NDArray local = labels.sub(start).mul(inRange.toType(DataType.INT64, false));
        NDArray target = shifted.gather(local.expandDims(-1), -1).squeeze(-1)
                .mul(inRange.toType(DataType.FLOAT32, false));
        target = tp.reduceFromRegion(target);

        NDArray sumExp = tp.reduceFromRegion(shifted.exp().sum(new int[] {-1}));
        NDArray valid = labels.gte(IGNORE_BELOW).toType(DataType.FLOAT32, false);
        return sumExp.log().sub(target).mul(valid);
    }

    /** Mean loss over the labels that are not ignored (Hugging Face's causal-LM reduction). */
    public NDArray meanLoss(NDArray localLogits, NDArray labels) {
        NDArray losses = tokenLosses(localLogits, labels);
        NDArray count = labels.gte(IGNORE_BELOW).toType(DataType.FLOAT32, false).sum();
        return losses.sum().div(count);
    }
}
