package org.djlmegatron.training.model;

/**
 * One micro-batch of token ids: {@code inputs} and {@code labels}, both {@code [rows, seq]}
 * row-major; labels below zero are ignored by the loss.
 */
public record MicroBatch(long[] inputs, long[] labels, int rows, int seq) {

    public MicroBatch {
        if (inputs.length != (long) rows * seq || labels.length != inputs.length) {
            throw new IllegalArgumentException("micro-batch of " + rows + " x " + seq + " needs "
                    + (long) rows * seq + " inputs and labels, found " + inputs.length + " and " + labels.length);
        }
    }

    /** Next-token prediction from {@code rows} sequences of {@code seq + 1} tokens: x = row[:-1], y = row[1:]. */
    public static MicroBatch shifted(long[][] rowsOfTokens) {
        int rows = rowsOfTokens.length;
        int seq = rowsOfTokens[0].length - 1;
        long[] x = new long[rows * seq];
        long[] y = new long[rows * seq];
        for (int r = 0; r < rows; r++) {
            if (rowsOfTokens[r].length != seq + 1) {
                throw new IllegalArgumentException("row " + r + " has " + rowsOfTokens[r].length
                        + " tokens, expected " + (seq + 1));
            }
            System.arraycopy(rowsOfTokens[r], 0, x, r * seq, seq);
            System.arraycopy(rowsOfTokens[r], 1, y, r * seq, seq);
        }
        return new MicroBatch(x, y, rows, seq);
    }

    public long tokens() {
        return inputs.length;
    }
}
