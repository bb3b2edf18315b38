package org.djlmegatron.bridge.megatron;

import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;

/**
 * Alternative Megatron-Core spellings of parameter names: Transformer Engine fuses the layer
 * norms into the following linear layer, and Megatron's local layer spec maps its own names to
 * those in distributed checkpoints. Both read as the plain names {@code GPTModel} uses.
 */
final class McoreNames {

    /** Fused (Transformer Engine) suffix within a layer to the plain one. */
    static final Map<String, String> FUSED_TO_PLAIN = Map.of(
            "self_attention.linear_qkv.layer_norm_weight", "input_layernorm.weight",
            "self_attention.linear_qkv.layer_norm_bias", "input_layernorm.bias",
            "mlp.linear_fc1.layer_norm_weight", "pre_mlp_layernorm.weight",
            "mlp.linear_fc1.layer_norm_bias", "pre_mlp_layernorm.bias");

    /** Plain suffix to the fused one (what distributed checkpoints store). */
    static final Map<String, String> PLAIN_TO_FUSED = FUSED_TO_PLAIN.entrySet().stream()
            .collect(Collectors.toUnmodifiableMap(Map.Entry::getValue, Map.Entry::getKey));

    /** Linear modules that carry an {@code _extra_state} entry in Megatron state dicts. */
    static final Set<String> LINEAR_MODULES =
            Set.of("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2", "output_layer");

    private McoreNames() {}

    /** A layer-relative suffix in plain form. */
    static String plain(String suffix) {
        return FUSED_TO_PLAIN.getOrDefault(suffix, suffix);
    }

    /** The module of a parameter name ({@code x.y.weight} -> {@code x.y}), or null for a bare name. */
    static String moduleOf(String name) {
        int dot = name.lastIndexOf('.');
        return dot < 0 ? null : name.substring(0, dot);
    }

    /** Whether the module owning {@code name} is a linear layer with extra state. */
    static boolean isLinear(String name) {
        String module = moduleOf(name);
        if (module == null) {
            return false;
        }
        return LINEAR_MODULES.contains(module.substring(module.lastIndexOf('.') + 1));
    }
}
