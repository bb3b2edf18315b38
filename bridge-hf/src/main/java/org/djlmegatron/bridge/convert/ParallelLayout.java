package org.djlmegatron.bridge.convert;

import org.djlmegatron.transformer.TransformerConfig;

/**
 * How a checkpoint is split over model-parallel ranks: tensor (TP), pipeline (PP) and expert (EP)
 * parallel sizes.
 *
 * @param tp tensor-parallel size
 * @param pp pipeline-parallel size
 * @param ep expert-parallel size
 */
public record ParallelLayout(int tp, int pp, int ep) {

    public static final ParallelLayout SINGLE = new ParallelLayout(1, 1, 1);

    public ParallelLayout {
        if (tp < 1 || pp < 1 || ep < 1) {
            throw new IllegalArgumentException("parallel sizes must be positive, found tp=" + tp + " pp=" + pp
                    + " ep=" + ep);
        }
    }

    /**
     * Fails, naming the sizes, unless a model of {@code c} can be split this way. Called before
     * anything is written.
     */
    public void validate(TransformerConfig c) {
        divides("tensor-parallel", tp, c.numAttentionHeads(), "attention heads (num_attention_heads)");
        divides("tensor-parallel", tp, c.numQueryGroups(), "key/value heads (num_query_groups)");
        divides("tensor-parallel", tp, c.vocabSize(), "vocabulary rows (padded_vocab_size)");
        if (c.isMoe()) {
            divides("tensor-parallel", tp, c.moeFfnHiddenSize(), "expert MLP rows (moe_ffn_hidden_size)");
            divides("expert-parallel", ep, c.numExperts(), "experts (num_experts)");
        } else {
            divides("tensor-parallel", tp, c.ffnHiddenSize(), "MLP rows (ffn_hidden_size)");
            if (ep > 1) {
                throw new CheckpointException("expert-parallel size " + ep + " needs a mixture-of-experts model; "
                        + "this one is dense");
            }
        }
        divides("pipeline-parallel", pp, c.numLayers(), "layers (num_layers)");
    }

    private static void divides(String what, int size, int count, String of) {
        if (count % size != 0) {
            throw new CheckpointException(what + " size " + size + " does not divide the " + count + " " + of);
        }
    }

    /** Layers on each pipeline stage (an even split). */
    public int layersPerStage(TransformerConfig c) {
        return c.numLayers() / pp;
    }

    /** Experts on each expert-parallel rank. */
    public int expertsPerRank(TransformerConfig c) {
        return c.numExperts() / ep;
    }

    @Override
    public String toString() {
        return "tp=" + tp + " pp=" + pp + " ep=" + ep;
    }
}
