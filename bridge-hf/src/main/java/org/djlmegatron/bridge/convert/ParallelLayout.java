package org.djlmegatron.bridge.convert;

import java.util.Arrays;
import java.util.List;
import org.djlmegatron.pipeline.PipelineLayout;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * How a checkpoint is split over model-parallel ranks: tensor (TP), pipeline (PP) and expert (EP)
 * parallel sizes, and how the pipeline stages share the layers: Megatron's even split, or with
 * {@code vp} virtual stages (model chunks) per stage, or explicit per-virtual-stage layer counts
 * (an uneven split, {@code --decoder-first/last-pipeline-num-layers}).
 *
 * @param tp tensor-parallel size
 * @param pp pipeline-parallel size
 * @param ep expert-parallel size
 * @param vp model chunks per pipeline stage ({@code --virtual-pipeline-model-parallel-size}, 1 without)
 * @param stageLayers layers of each virtual stage ({@code c pp + stage}), or empty for the even split
 */
public record ParallelLayout(int tp, int pp, int ep, int vp, List<Integer> stageLayers) {

    public static final ParallelLayout SINGLE = new ParallelLayout(1, 1, 1);

    public ParallelLayout {
        if (tp < 1 || pp < 1 || ep < 1 || vp < 1) {
            throw new IllegalArgumentException("parallel sizes must be positive, found tp=" + tp + " pp=" + pp
                    + " ep=" + ep + " vp=" + vp);
        }
        stageLayers = List.copyOf(stageLayers);
        if (!stageLayers.isEmpty() && stageLayers.size() != pp * vp) {
            throw new IllegalArgumentException("per-stage layer counts " + stageLayers + " for pp=" + pp + " x vp=" + vp
                    + ": expected " + pp * vp + " counts");
        }
    }

    /** An even split of the layers, one model chunk per stage. */
    public ParallelLayout(int tp, int pp, int ep) {
        this(tp, pp, ep, 1, List.of());
    }

    /** This layout with the pipeline split of {@code stages} (its PP size must be this one's). */
    public ParallelLayout withStages(PipelineLayout stages) {
        if (stages.pipelineSize() != pp) {
            throw new IllegalArgumentException("a split over " + stages.pipelineSize() + " stages for pp=" + pp);
        }
        List<Integer> counts = stages.isEven() ? List.of() : Arrays.stream(stages.layerCounts()).boxed().toList();
        return new ParallelLayout(tp, pp, ep, stages.chunks(), counts);
    }

    /** Whether layers are split evenly over stages with one chunk each (the only split before virtual stages). */
    public boolean isPlainSplit() {
        return vp == 1 && stageLayers.isEmpty();
    }

    /** Which layers each (virtual) stage holds for model {@code c}; fails, naming the numbers, when they do not fit. */
    public PipelineLayout stages(TransformerConfig c) {
        try {
            if (stageLayers.isEmpty()) {
                return PipelineLayout.of(c.numLayers(), pp, vp, null, null);
            }
            PipelineLayout s = PipelineLayout.ofCounts(pp, vp, stageLayers.stream().mapToInt(Integer::intValue).toArray());
            if (s.numLayers() != c.numLayers()) {
                throw new IllegalArgumentException("per-stage layer counts " + stageLayers + " add up to " + s.numLayers()
                        + ", the model has " + c.numLayers() + " layers (num_layers)");
            }
            return s;
        } catch (IllegalArgumentException e) {
            throw new CheckpointException("pipeline split " + this + ": " + e.getMessage(), e);
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
        if (stageLayers.isEmpty()) {
            divides("pipeline-parallel", pp * vp, c.numLayers(), "layers (num_layers)");
        }
        stages(c);
    }

    private static void divides(String what, int size, int count, String of) {
        if (count % size != 0) {
            throw new CheckpointException(what + " size " + size + " does not divide the " + count + " " + of);
        }
    }

    /** Experts on each expert-parallel rank. */
    public int expertsPerRank(TransformerConfig c) {
        return c.numExperts() / ep;
    }

    @Override
    public String toString() {
        return "tp=" + tp + " pp=" + pp + " ep=" + ep + (vp > 1 ? " vp=" + vp : "")
                + (stageLayers.isEmpty() ? "" : " layers per stage " + stageLayers);
    }
}
