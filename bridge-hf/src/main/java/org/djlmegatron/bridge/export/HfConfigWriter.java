package org.djlmegatron.bridge.export;

import com.google.gson.JsonArray;
import com.google.gson.JsonNull;
import com.google.gson.JsonObject;
import java.nio.file.Path;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.hf.HfConfig;
import org.djlmegatron.bridge.hf.HfRopeScaling;
import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.transformer.TransformerConfig;
import org.djlmegatron.transformer.TransformerConfig.PositionEmbedding;

/**
 * {@code config.json} and {@code generation_config.json} for each supported architecture. The
 * config written is parsed back with {@link HfConfig} and must describe the same model, so a
 * model an architecture cannot express (a biased Llama MLP, GPT-2 with RoPE, ...) is refused
 * rather than exported wrongly.
 */
public final class HfConfigWriter {

    private HfConfigWriter() {}

    /**
     * The architecture that holds a model exactly: GPT-2 for learned positions, Qwen2-MoE for
     * shared experts (gated, q/k/v biases), Qwen3(-MoE) for q/k norms, Qwen2 for q/k/v biases,
     * Mixtral for other MoE models, Llama otherwise.
     */
    public static String inferModelType(TransformerConfig c) {
        if (c.positionEmbedding() == PositionEmbedding.LEARNED_ABSOLUTE) {
            return "gpt2";
        }
        if (c.hasSharedExperts()) {
            return "qwen2_moe";
        }
        if (c.isMoe()) {
            return c.qkLayernorm() ? "qwen3_moe" : "mixtral";
        }
        if (c.qkLayernorm()) {
            return "qwen3";
        }
        return c.addQkvBias() ? "qwen2" : "llama";
    }

    /** {@code config.json} of {@code modelType} for {@code c}. */
    public static JsonObject config(String modelType, TransformerConfig c, SafetensorsDType dtype) {
        JsonObject o = modelType.equals("gpt2") ? gpt2(c) : llamaFamily(modelType, c);
        o.addProperty("torch_dtype", switch (dtype) {
            case F16 -> "float16";
            case BF16 -> "bfloat16";
            case F64 -> "float64";
            default -> "float32";
        });
        o.addProperty("use_cache", true);
        TransformerConfig back;
        try {
            back = HfConfig.parse(Path.of("config.json"), o).config();
        } catch (RuntimeException e) {
            throw new CheckpointException("model_type " + modelType + " cannot hold this model: " + e.getMessage(), e);
        }
        if (!normalized(back).equals(normalized(c))) {
            throw new CheckpointException("model_type " + modelType + " cannot hold this model exactly: it would read "
                    + "back as " + normalized(back) + " instead of " + normalized(c));
        }
        return o;
    }

    /** A minimal {@code generation_config.json}. */
    public static JsonObject generationConfig() {
        JsonObject o = new JsonObject();
        o.addProperty("_from_model_config", true);
        return o;
    }

    private static JsonObject llamaFamily(String type, TransformerConfig c) {
        JsonObject o = new JsonObject();
        JsonArray arch = new JsonArray();
        arch.add(switch (type) {
            case "llama" -> "LlamaForCausalLM";
            case "mistral" -> "MistralForCausalLM";
            case "qwen2" -> "Qwen2ForCausalLM";
            case "qwen3" -> "Qwen3ForCausalLM";
            case "mixtral" -> "MixtralForCausalLM";
            case "qwen3_moe" -> "Qwen3MoeForCausalLM";
            case "qwen2_moe" -> "Qwen2MoeForCausalLM";
            default -> throw new CheckpointException("model_type '" + type + "' is not supported for export; supported: "
                    + String.join(", ", HfConfig.SUPPORTED.stream().sorted().toList()));
        });
        o.add("architectures", arch);
        o.addProperty("model_type", type);
        o.addProperty("vocab_size", c.vocabSize());
        o.addProperty("hidden_size", c.hiddenSize());
        o.addProperty("intermediate_size", c.ffnHiddenSize());
        o.addProperty("num_hidden_layers", c.numLayers());
        o.addProperty("num_attention_heads", c.numAttentionHeads());
        o.addProperty("num_key_value_heads", c.numQueryGroups());
        o.addProperty("head_dim", c.kvChannels());
        o.addProperty("hidden_act", "silu");
        o.addProperty("max_position_embeddings", c.maxPositionEmbeddings());
        o.addProperty("rms_norm_eps", c.normEpsilon());
        o.addProperty("rope_theta", c.rotaryBase());
        HfRopeScaling.write(o, c.rotaryBase(), c.ropeScaling());
        o.addProperty("tie_word_embeddings", c.tieEmbeddings());
        if (!type.equals("qwen2") && !type.equals("qwen2_moe")) {
            o.addProperty("attention_bias", c.addQkvBias());
        }
        if (type.startsWith("qwen") || type.equals("mistral") || type.equals("mixtral")) {
            o.add("sliding_window", JsonNull.INSTANCE);
        }
        if (type.startsWith("qwen")) {
            o.addProperty("use_sliding_window", false);
        }
        if (type.equals("mixtral")) {
            o.addProperty("num_local_experts", c.numExperts());
            o.addProperty("num_experts_per_tok", c.moeRouterTopK());
            o.addProperty("intermediate_size", c.moeFfnHiddenSize());
        } else if (type.equals("qwen3_moe") || type.equals("qwen2_moe")) {
            if (type.equals("qwen2_moe")) {
                o.addProperty("shared_expert_intermediate_size", c.moeSharedExpertIntermediateSize());
            }
            o.addProperty("num_experts", c.numExperts());
            o.addProperty("num_experts_per_tok", c.moeRouterTopK());
            o.addProperty("moe_intermediate_size", c.moeFfnHiddenSize());
            o.addProperty("norm_topk_prob", c.moeRenormalizeTopK());
            o.addProperty("decoder_sparse_step", 1);
            o.add("mlp_only_layers", new JsonArray());
        }
        return o;
    }

    private static JsonObject gpt2(TransformerConfig c) {
        JsonObject o = new JsonObject();
        JsonArray arch = new JsonArray();
        arch.add("GPT2LMHeadModel");
        o.add("architectures", arch);
        o.addProperty("model_type", "gpt2");
        o.addProperty("vocab_size", c.vocabSize());
        o.addProperty("n_embd", c.hiddenSize());
        o.addProperty("n_layer", c.numLayers());
        o.addProperty("n_head", c.numAttentionHeads());
        o.addProperty("n_positions", c.maxPositionEmbeddings());
        if (c.ffnHiddenSize() == 4 * c.hiddenSize()) {
            o.add("n_inner", JsonNull.INSTANCE);
        } else {
            o.addProperty("n_inner", c.ffnHiddenSize());
        }
        o.addProperty("activation_function", "gelu_new");
        o.addProperty("layer_norm_epsilon", c.normEpsilon());
        o.addProperty("tie_word_embeddings", c.tieEmbeddings());
        o.addProperty("scale_attn_weights", true);
        return o;
    }

    /** Fields that do not change the model reset, so equal models compare equal. */
    private static TransformerConfig normalized(TransformerConfig c) {
        boolean rope = c.positionEmbedding() == PositionEmbedding.ROPE;
        return new TransformerConfig(c.numLayers(), c.hiddenSize(), c.numAttentionHeads(), c.numQueryGroups(),
                c.kvChannels(), c.isMoe() ? 0 : c.ffnHiddenSize(), c.vocabSize(), c.maxPositionEmbeddings(),
                c.normalization(), c.normEpsilon(), c.activation(), c.positionEmbedding(),
                rope ? c.rotaryBase() : 10000, c.addQkvBias(), c.addBiasLinear(), c.qkLayernorm(), c.tieEmbeddings(),
                c.numExperts(), c.isMoe() ? c.moeRouterTopK() : 0, c.isMoe() ? c.moeFfnHiddenSize() : 0,
                c.isMoe() && c.moeRenormalizeTopK(), rope ? c.ropeScaling() : null,
                c.moeSharedExpertIntermediateSize(), c.moeSharedExpertGate());
    }
}
