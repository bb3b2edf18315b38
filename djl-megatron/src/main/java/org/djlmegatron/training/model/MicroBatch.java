package org.djlmegatron.training.model;

/**
 * One micro-batch of token ids: {@code inputs} and {@code labels}, both {@code [rows, seq]}
 * row-major; labels below zero are ignored by the loss.
 */
public record MicroBatch(long[] inputs, long[] labels, int rows, int seq) {

    /**
     * Megatron-Core's pad token id ({@code _PAD_TOKEN_ID} in {@code gpt_dataset.py}): a label equal
     * to it is left out of the loss (numerator and token count), an input equal to it reads token 0.
     */
    public static final long PAD = -1;

    public MicroBatch {
        if (inputs.length != (long) rows * seq || labels.length != inputs.length) {
            throw new IllegalArgumentException("micro-batch of " + rows + " x " + seq + " needs "
                    + (long) rows * seq + " inputs and labels, found " + inputs.length + " and " + labels.length);
        }
    }

    /**
     * Next-token prediction from {@code rows} sequences of {@code seq + 1} tokens: x = row[:-1],
     * y = row[1:]; {@link #PAD} tokens become input 0 and an ignored label, as in Megatron.
     */
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
        for (int i = 0; i < x.length; i++) {
            if (x[i] == PAD) {
                x[i] = 0;
            }
        }
        return new MicroBatch(x, y, rows, seq);
    }

    public long tokens() {
        return inputs.length;
    }
}
