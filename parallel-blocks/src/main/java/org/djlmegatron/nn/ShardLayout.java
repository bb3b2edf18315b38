package org.djlmegatron.nn;

/** How a parameter's full tensor is split across the tensor-parallel group. */
public enum ShardLayout {
    /** Every rank holds the whole tensor. */
    REPLICATED,
    /** Split along axis 0 (rows of a column-parallel weight, a column-parallel bias, vocab rows). */
    SPLIT_ROWS,
    /** Split along axis 1 (columns of a row-parallel weight). */
    SPLIT_COLUMNS,
    /**
     * Two stacked halves [gate; up] each split along axis 0, so rank r holds [gate_r; up_r]
     * (Megatron's gated {@code linear_fc1}).
     */
    SPLIT_ROWS_GATED
}
