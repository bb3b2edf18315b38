package org.djlmegatron.bridge.convert;

import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.pipeline.PipelineLayout;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Where each parameter goes in a checkpoint split over pipeline stages and expert-parallel ranks
 * (every tensor-parallel rank of a target gets its shard): a layer on the stage and model chunk
 * that hold it ({@link ParallelLayout#stages}: even, uneven or interleaved as Megatron splits),
 * embeddings on the first stage's first chunk, the final norm and output layer on the last stage's
 * last chunk, an expert on the rank that owns it, everything else on every expert rank.
 */
public final class RankPlacement {

    /**
     * One destination.
     *
     * @param pp pipeline stage
     * @param ep expert-parallel rank
     * @param chunk the model chunk (virtual stage {@code chunk pp + stage}) in that file, 0 without interleaving
     * @param name the parameter's key in that file (and chunk)
     */
    public record Target(int pp, int ep, int chunk, String name) {}

    private final ParallelLayout layout;
    private final PipelineLayout stages;
    private final int expertsPerRank;
    private final boolean localNumbering;

    /**
     * @param localNumbering number layers from 0 within each model chunk and experts from 0 within
     *     each expert rank (Megatron's legacy format) rather than globally
     */
    public RankPlacement(TransformerConfig config, ParallelLayout layout, boolean localNumbering) {
        layout.validate(config);
        this.layout = layout;
        this.stages = layout.stages(config);
        this.expertsPerRank = config.isMoe() ? layout.expertsPerRank(config) : 1;
        this.localNumbering = localNumbering;
    }

    public ParallelLayout layout() {
        return layout;
    }

    /** The files (stage, expert rank) that hold {@code spec}, with its chunk and key in each. */
    public List<Target> targets(ParamSpec spec) {
        int layer = spec.layer();
        int expert = spec.expert();
        int virtualStage;
        if (layer >= 0) {
            virtualStage = stages.virtualStageOf(layer);
        } else {
            virtualStage = spec.name().startsWith("embedding.") ? 0 : layout.pp() * layout.vp() - 1;
        }
        int stage = virtualStage % layout.pp();
        int chunk = virtualStage / layout.pp();
        List<Target> out = new ArrayList<>();
        for (int e = 0; e < layout.ep(); e++) {
            if (expert >= 0 && expert / expertsPerRank != e) {
                continue;
            }
            String name = spec.name();
            if (localNumbering && layer >= 0) {
                name = ParamSpec.renumber(name, layer - stages.firstLayer(stage, chunk),
                        expert >= 0 ? expert - e * expertsPerRank : -1);
            }
            out.add(new Target(stage, e, chunk, name));
        }
        return out;
    }
}
