package org.djlmegatron.models;

import org.djlmegatron.transformer.TransformerConfig;

/**
 * Matmul FLOPs of a GPT model, counted as Megatron does (2 per multiply-add; backward = twice
 * forward; attention scores over the full s x s square; norms and element-wise ops ignored).
 */
public final class ModelFlops {

    private ModelFlops() {}

    /** Forward-pass matmul FLOPs for {@code batch} sequences of {@code seq} tokens. */
    public static double forward(TransformerConfig c, long batch, long seq) {
        double tokens = (double) batch * seq;
        double h = c.hiddenSize();
        double attnWidth = (double) c.numAttentionHeads() * c.kvChannels();
        double qkv = h * c.qkvRows();
        double proj = attnWidth * h;
        double scores = 2.0 * seq * attnWidth; // QK^T and PV, per token
        double mlp;
        if (c.isMoe()) {
            mlp = c.moeRouterTopK() * mlpMacs(c, c.moeFfnHiddenSize()) + h * c.numExperts();
        } else {
            mlp = mlpMacs(c, c.ffnHiddenSize());
        }
        double perLayer = qkv + proj + scores + mlp;
        double logits = h * c.vocabSize();
        return 2.0 * tokens * (c.numLayers() * perLayer + logits);
    }

    /** Forward plus backward (three times the forward). */
    public static double training(TransformerConfig c, long batch, long seq) {
        return 3.0 * forward(c, batch, seq);
    }

    private static double mlpMacs(TransformerConfig c, int ffn) {
        return (c.isGated() ? 3.0 : 2.0) * c.hiddenSize() * ffn;
    }
}
