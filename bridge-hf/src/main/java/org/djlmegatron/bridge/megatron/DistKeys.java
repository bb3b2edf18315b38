package org.djlmegatron.bridge.megatron;

import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.bridge.convert.ParamSpec;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * How Megatron-Core's distributed checkpoints name parameters: every decoder layer's tensor is one
 * slice of a global tensor stacked over layers ({@code decoder.layers.self_attention.linear_qkv.weight}
 * of shape {@code [num_layers, rows, cols]}), experts add an expert axis
 * ({@code decoder.layers.mlp.experts.experts.linear_fc1.weight} of {@code [layers, experts, ...]}),
 * and the layer norms go by the names Transformer Engine fuses them under
 * ({@code self_attention.linear_qkv.layer_norm_weight}, {@code mlp.linear_fc1.layer_norm_weight}),
 * which Megatron's local layer spec maps its norms to.
 */
final class DistKeys {

    /**
     * Where a parameter lives.
     *
     * @param key the distributed-checkpoint key
     * @param index its position along the leading (layer, expert) axes; empty for whole tensors
     */
    record Location(String key, long[] index) {}

    private DistKeys() {}

    /** The keys a parameter may be stored under, the one Megatron writes first. */
    static List<Location> candidates(ParamSpec spec) {
        int layer = spec.layer();
        if (layer < 0) {
            return List.of(new Location(spec.name(), new long[0]));
        }
        String rest = ParamSpec.layerPart(spec.name());
        int expert = spec.expert();
        List<Location> out = new ArrayList<>();
        if (expert >= 0) {
            out.add(new Location("decoder.layers.mlp.experts.experts." + ParamSpec.expertPart(spec.name()),
                    new long[] {layer, expert}));
            return out;
        }
        String fused = McoreNames.PLAIN_TO_FUSED.get(rest);
        if (fused != null) {
            out.add(new Location("decoder.layers." + fused, new long[] {layer}));
        }
        out.add(new Location("decoder.layers." + rest, new long[] {layer}));
        return out;
    }

    /** The global shape of the stacked tensor a location belongs to. */
    static long[] globalShape(Location loc, long[] paramShape, TransformerConfig c) {
        long[] lead = switch (loc.index().length) {
            case 0 -> new long[0];
            case 1 -> new long[] {c.numLayers()};
            default -> new long[] {c.numLayers(), c.numExperts()};
        };
        long[] out = new long[lead.length + paramShape.length];
        System.arraycopy(lead, 0, out, 0, lead.length);
        System.arraycopy(paramShape, 0, out, lead.length, paramShape.length);
        return out;
    }

    /** Extra-state object keys Megatron saves for one layer's linear modules ({@code [None]} each). */
    static List<String> extraStates(TransformerConfig c, int layer) {
        String of = "_" + c.numLayers();
        List<String> out = new ArrayList<>();
        out.add("decoder.layers.self_attention.linear_proj._extra_state/shard_" + layer + of);
        out.add("decoder.layers.self_attention.linear_qkv._extra_state/shard_" + layer + of);
        if (c.isMoe()) {
            for (int e = 0; e < c.numExperts(); e++) {
                String at = "/shard_" + layer + "." + e + "_" + c.numLayers() + "." + c.numExperts();
                out.add("decoder.layers.mlp.experts.experts.linear_fc1._extra_state" + at);
                out.add("decoder.layers.mlp.experts.experts.linear_fc2._extra_state" + at);
            }
        } else {
            out.add("decoder.layers.mlp.linear_fc1._extra_state/shard_" + layer + of);
            out.add("decoder.layers.mlp.linear_fc2._extra_state/shard_" + layer + of);
        }
        return out;
    }
}
