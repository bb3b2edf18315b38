package org.djlmegatron.data;

/**
 * Megatron's document masking of a packed sample ({@code _get_ltor_masks_and_position_ids} in
 * megatron/core/datasets/gpt_dataset.py), computed from the sample's input tokens
 * ({@code text[:-1]}) and the end-of-document token:
 * <ul>
 *   <li>{@code --reset-position-ids}: positions restart at 0 after every EOD token;
 *   <li>{@code --reset-attention-mask}: a token attends only to tokens since the last EOD before it
 *       (the EOD itself belongs to the document it ends), as Megatron's {@code mask[i+1:, :i+1] = 0};
 *       here as a document number per token: i may attend j iff j <= i and their documents agree;
 *   <li>{@code --eod-mask-loss}: the loss at EOD input positions is masked (weight 0).
 * </ul>
 */
public record DocumentMasks(long[] positions, int[] documents, float[] lossMask) {

    /** The masks of one sample's input tokens. */
    public static DocumentMasks of(long[] tokens, long eod, boolean resetPositionIds, boolean resetAttentionMask,
            boolean eodMaskLoss) {
        int n = tokens.length;
        long[] positions = new long[n];
        int[] documents = new int[n];
        float[] lossMask = new float[n];
        int document = 0;
        long start = 0; // where the current document's positions start
        for (int t = 0; t < n; t++) {
            positions[t] = resetPositionIds ? t - start : t;
            documents[t] = resetAttentionMask ? document : 0;
            lossMask[t] = eodMaskLoss && tokens[t] == eod ? 0f : 1f;
            if (tokens[t] == eod) {
                document++;
                start = t + 1;
            }
        }
        return new DocumentMasks(positions, documents, lossMask);
    }

    /** Whether query {@code i} may attend key {@code j} (causal, within a document). */
    public boolean attends(int i, int j) {
        return j <= i && documents[i] == documents[j];
    }

    /** Megatron's boolean attention mask {@code [s, s]}: true where attention is masked out. */
    public boolean[][] maskedOut() {
        int n = documents.length;
        boolean[][] m = new boolean[n][n];
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < n; j++) {
                m[i][j] = !attends(i, j);
            }
        }
        return m;
    }
}
