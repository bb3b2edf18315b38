package org.djlmegatron.bridge.convert;

import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Where each parameter goes in a checkpoint split over pipeline stages and expert-parallel ranks
 * (every tensor-parallel rank of a target gets its shard): layers on the stage that holds them
 * (an even split), embeddings on the first stage, the final norm and output layer on the last,
 * an expert on the rank that owns it, everything else on every expert rank.
 */
public final class RankPlacement {

    /**
     * One destination.
     *
     * @param pp pipeline stage
     * @param ep expert-parallel rank
     * @param name the parameter's key in that file
     */
    public record Target(int pp, int ep, String name) {}

    private final ParallelLayout layout;
    private final int layersPerStage;
    private final int expertsPerRank;
    private final boolean localNumbering;

    /**
     * @param localNumbering number layers and experts from 0 within each file (Megatron's legacy
     *     format) rather than globally
     */
    public RankPlacement(TransformerConfig config, ParallelLayout layout, boolean localNumbering) {
        layout.validate(config);
        this.layout = layout;
        this.layersPerStage = layout.layersPerStage(config);
        this.expertsPerRank = config.isMoe() ? layout.expertsPerRank(config) : 1;
        this.localNumbering = localNumbering;
    }

    public ParallelLayout layout() {
        return layout;
    }

    /** The files (stage, expert rank) that hold {@code spec}, with its key in each. */
    public List<Target> targets(ParamSpec spec) {
        int layer = spec.layer();
        int expert = spec.expert();
        int stage;
        if (layer >= 0) {
            stage = layer / layersPerStage;
        } else {
            stage = spec.name().startsWith("embedding.") ? 0 : layout.pp() - 1;
        }
        List<Target> out = new ArrayList<>();
        for (int e = 0; e < layout.ep(); e++) {
            if (expert >= 0 && expert / expertsPerRank != e) {
                continue;
            }
            String name = spec.name();
            if (localNumbering && layer >= 0) {
                name = ParamSpec.renumber(name, layer - stage * layersPerStage,
                        expert >= 0 ? expert - e * expertsPerRank : -1);
            }
            out.add(new Target(stage, e, name));
        }
        return out;
    }
}
