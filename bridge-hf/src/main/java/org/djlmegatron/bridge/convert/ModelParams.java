package org.djlmegatron.bridge.convert;

import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.nn.Norm;
import org.djlmegatron.nn.ShardLayout;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Every parameter a {@link org.djlmegatron.models.GPTModel} of a config has, in its registration
 * order, without building the model: what converters iterate over. A test keeps it in step with
 * {@code GPTModel.parameters()}.
 */
public final class ModelParams {

    private ModelParams() {}

    public static List<ParamSpec> of(TransformerConfig c) {
        List<ParamSpec> out = new ArrayList<>();
        long h = c.hiddenSize();
        out.add(spec("embedding.word_embeddings.weight", ShardLayout.SPLIT_ROWS, c.vocabSize(), h));
        if (c.positionEmbedding() == TransformerConfig.PositionEmbedding.LEARNED_ABSOLUTE) {
            out.add(spec("embedding.position_embeddings.weight", ShardLayout.REPLICATED,
                    c.maxPositionEmbeddings(), h));
        }
        for (int i = 0; i < c.numLayers(); i++) {
            String l = "decoder.layers." + i + ".";
            norm(out, l + "input_layernorm", c, h);
            ShardLayout rows = ShardLayout.SPLIT_ROWS;
            out.add(spec(l + "self_attention.linear_qkv.weight", rows, c.qkvRows(), h));
            if (c.addQkvBias()) {
                out.add(spec(l + "self_attention.linear_qkv.bias", rows, c.qkvRows()));
            }
            if (c.qkLayernorm()) {
                out.add(spec(l + "self_attention.q_layernorm.weight", ShardLayout.REPLICATED, c.kvChannels()));
                out.add(spec(l + "self_attention.k_layernorm.weight", ShardLayout.REPLICATED, c.kvChannels()));
            }
            long width = (long) c.numAttentionHeads() * c.kvChannels();
            out.add(spec(l + "self_attention.linear_proj.weight", ShardLayout.SPLIT_COLUMNS, h, width));
            if (c.addBiasLinear()) {
                out.add(spec(l + "self_attention.linear_proj.bias", ShardLayout.REPLICATED, h));
            }
            norm(out, l + "pre_mlp_layernorm", c, h);
            if (c.isMoe()) {
                out.add(spec(l + "mlp.router.weight", ShardLayout.REPLICATED, c.numExperts(), h));
                for (int e = 0; e < c.numExperts(); e++) {
                    mlp(out, l + "mlp.experts.local_experts." + e + ".", c, c.moeFfnHiddenSize(), false);
                }
                if (c.hasSharedExperts()) { // a module's own parameters come before its children's, as in torch
                    if (c.moeSharedExpertGate()) {
                        out.add(spec(l + "mlp.shared_experts.gate_weight", ShardLayout.REPLICATED, 1, h));
                    }
                    mlp(out, l + "mlp.shared_experts.", c, c.moeSharedExpertIntermediateSize(), false);
                }
            } else {
                mlp(out, l + "mlp.", c, c.ffnHiddenSize(), c.addBiasLinear());
            }
        }
        norm(out, "decoder.final_layernorm", c, h);
        if (!c.tieEmbeddings()) {
            out.add(spec("output_layer.weight", ShardLayout.SPLIT_ROWS, c.vocabSize(), h));
        }
        return out;
    }

    private static void mlp(List<ParamSpec> out, String prefix, TransformerConfig c, long ffn, boolean bias) {
        ShardLayout fc1 = c.isGated() ? ShardLayout.SPLIT_ROWS_GATED : ShardLayout.SPLIT_ROWS;
        long rows = c.isGated() ? 2 * ffn : ffn;
        out.add(spec(prefix + "linear_fc1.weight", fc1, rows, c.hiddenSize()));
        if (bias) {
            out.add(spec(prefix + "linear_fc1.bias", fc1, rows));
        }
        out.add(spec(prefix + "linear_fc2.weight", ShardLayout.SPLIT_COLUMNS, c.hiddenSize(), ffn));
        if (bias) {
            out.add(spec(prefix + "linear_fc2.bias", ShardLayout.REPLICATED, c.hiddenSize()));
        }
    }

    private static void norm(List<ParamSpec> out, String prefix, TransformerConfig c, long h) {
        out.add(spec(prefix + ".weight", ShardLayout.REPLICATED, h));
        if (c.normalization() == Norm.Kind.LAYER_NORM) {
            out.add(spec(prefix + ".bias", ShardLayout.REPLICATED, h));
        }
    }

    private static ParamSpec spec(String name, ShardLayout layout, long... shape) {
        return new ParamSpec(name, shape, layout);
    }
}
