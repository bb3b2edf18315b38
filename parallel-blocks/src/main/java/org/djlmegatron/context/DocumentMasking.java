package org.djlmegatron.context;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.types.DataType;

/**
 * Megatron's document masking of packed samples ({@code --reset-position-ids},
 * {@code --reset-attention-mask}, {@code --eod-mask-loss}), keyed by the end-of-document token.
 * Everything follows from a micro-batch's input ids, so the model derives it from them
 * ({@link #layout}) rather than the batch carrying masks: the same on every rank, stage and
 * recomputation.
 */
public record DocumentMasking(long eod, boolean resetPositionIds, boolean resetAttentionMask, boolean eodMaskLoss) {

    /** A label the loss ignores (below {@code VocabParallelCrossEntropy.IGNORE_BELOW}), as HF's -100. */
    private static final long IGNORED_LABEL = -100;

    /** Whether any of the three flags is on. */
    public boolean active() {
        return resetPositionIds || resetAttentionMask || eodMaskLoss;
    }

    /** The positions and documents of every row of {@code ids [b, S]} (the whole sequence, before any CP split). */
    public DocumentLayout layout(NDArray ids) {
        return DocumentLayout.of(this, ids);
    }

    /**
     * {@code --eod-mask-loss}: labels whose input token is the EOD are ignored by the loss (Megatron's
     * {@code loss_mask[tokens == eod] = 0}; the loss is the sum over the rest divided by their count).
     */
    public NDArray maskLabels(NDArray inputs, NDArray labels) {
        if (!eodMaskLoss) {
            return labels;
        }
        NDArray ignored = labels.getManager().full(labels.getShape(), IGNORED_LABEL, DataType.INT64);
        return NDArrays.where(inputs.eq(eod), ignored, labels);
    }
}
