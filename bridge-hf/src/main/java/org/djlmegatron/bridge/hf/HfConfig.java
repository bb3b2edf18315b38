package org.djlmegatron.bridge.hf;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Set;
import org.djlmegatron.nn.Norm;
import org.djlmegatron.transformer.TransformerConfig;
import org.djlmegatron.transformer.TransformerConfig.Activation;
import org.djlmegatron.transformer.TransformerConfig.PositionEmbedding;

/**
 * Hugging Face {@code config.json} to {@link TransformerConfig} for the supported architectures.
 * Reads {@code rope_theta} at the top level and inside transformers-5 {@code rope_parameters},
 * and rope scaling of type {@code llama3} or {@code linear} from {@code rope_parameters} or the
 * older {@code rope_scaling}; refuses what the model would silently get wrong (other rope types,
 * sliding windows, biased MLPs).
 *
 * @param modelType the {@code model_type} field
 * @param config the model shape
 */
public record HfConfig(String modelType, TransformerConfig config) {

    /** The {@code model_type}s this bridge maps. */
    public static final Set<String> SUPPORTED =
            Set.of("llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen3_moe", "qwen2_moe", "gpt2");

    /** Reads {@code dir/config.json}. */
    public static HfConfig read(Path dir) {
        Path file = dir.resolve("config.json");
        JsonObject json;
        try {
            json = JsonParser.parseString(Files.readString(file)).getAsJsonObject();
        } catch (IOException e) {
            throw new HfFormatException(file + ": cannot read (" + e.getMessage() + ")", e);
        } catch (RuntimeException e) {
            throw new HfFormatException(file + ": not a JSON object (" + e.getMessage() + ")", e);
        }
        return parse(file, json);
    }

    /** Maps a parsed config; {@code file} names the source in errors. */
    public static HfConfig parse(Path file, JsonObject json) {
        Fields f = new Fields(file, json);
        String type = f.string("model_type");
        if (!SUPPORTED.contains(type)) {
            throw new HfFormatException(file + ": model_type \"" + type + "\" is not supported; "
                    + "supported: " + String.join(", ", SUPPORTED.stream().sorted().toList()));
        }
        TransformerConfig cfg = "gpt2".equals(type) ? gpt2(f) : llamaFamily(f, type);
        return new HfConfig(type, cfg);
    }

    private static TransformerConfig llamaFamily(Fields f, String type) {
        String act = f.optString("hidden_act", "silu");
        if (!act.equals("silu")) {
            f.unsupported("hidden_act", act, "silu");
        }
        if (f.optBool("mlp_bias", false)) {
            f.unsupported("mlp_bias", "true", "false");
        }
        if (f.optBool("use_sliding_window", false)) {
            f.unsupported("use_sliding_window", "true", "false");
        }
        int hidden = f.integer("hidden_size");
        int heads = f.integer("num_attention_heads");
        TransformerConfig.Builder b = TransformerConfig.builder()
                .numLayers(f.integer("num_hidden_layers"))
                .hiddenSize(hidden)
                .numAttentionHeads(heads)
                .numQueryGroups(f.optInt("num_key_value_heads", heads))
                .kvChannels(f.optInt("head_dim", hidden / heads))
                .ffnHiddenSize(f.integer("intermediate_size"))
                .vocabSize(f.integer("vocab_size"))
                .maxPositionEmbeddings(f.integer("max_position_embeddings"))
                .normalization(Norm.Kind.RMS_NORM)
                .normEpsilon(f.optDouble("rms_norm_eps", 1e-6))
                .activation(Activation.SWIGLU)
                .positionEmbedding(PositionEmbedding.ROPE)
                .rotaryBase(ropeTheta(f))
                .ropeScaling(HfRopeScaling.read(f.file, f.json))
                .addQkvBias(type.equals("qwen2") || type.equals("qwen2_moe") || f.optBool("attention_bias", false))
                .qkLayernorm(type.startsWith("qwen3"))
                .tieEmbeddings(f.optBool("tie_word_embeddings", false));
        if (type.equals("mixtral")) {
            b.numExperts(f.integer("num_local_experts"))
                    .moeRouterTopK(f.integer("num_experts_per_tok"))
                    .moeFfnHiddenSize(f.integer("intermediate_size"))
                    .moeRenormalizeTopK(true);
        } else if (type.equals("qwen3_moe") || type.equals("qwen2_moe")) {
            if (f.optInt("decoder_sparse_step", 1) != 1) {
                f.unsupported("decoder_sparse_step", String.valueOf(f.optInt("decoder_sparse_step", 1)), "1");
            }
            JsonElement dense = f.json.get("mlp_only_layers");
            if (dense != null && dense.isJsonArray() && dense.getAsJsonArray().size() > 0) {
                f.unsupported("mlp_only_layers", dense.toString(), "[]");
            }
            int experts = f.json.has("num_experts") ? f.integer("num_experts") : f.integer("num_local_experts");
            b.numExperts(experts)
                    .moeRouterTopK(f.integer("num_experts_per_tok"))
                    .moeFfnHiddenSize(f.integer("moe_intermediate_size"))
                    .moeRenormalizeTopK(f.optBool("norm_topk_prob", false));
            if (type.equals("qwen2_moe")) { // Qwen2MoeSparseMoeBlock: shared_expert, gated by shared_expert_gate
                b.moeSharedExpertIntermediateSize(f.integer("shared_expert_intermediate_size"))
                        .moeSharedExpertGate(true);
            }
        }
        return b.build();
    }

    private static TransformerConfig gpt2(Fields f) {
        String act = f.optString("activation_function", "gelu_new");
        if (!Set.of("gelu_new", "gelu_pytorch_tanh").contains(act)) {
            f.unsupported("activation_function", act, "gelu_new or gelu_pytorch_tanh");
        }
        if (!f.optBool("scale_attn_weights", true) || f.optBool("scale_attn_by_inverse_layer_idx", false)
                || f.optBool("reorder_and_upcast_attn", false)) {
            throw new HfFormatException(f.file + ": only GPT-2's default attention scaling is supported "
                    + "(scale_attn_weights=true, scale_attn_by_inverse_layer_idx=false, "
                    + "reorder_and_upcast_attn=false)");
        }
        int hidden = f.integer("n_embd");
        return TransformerConfig.builder()
                .numLayers(f.integer("n_layer"))
                .hiddenSize(hidden)
                .numAttentionHeads(f.integer("n_head"))
                .ffnHiddenSize(f.optInt("n_inner", 4 * hidden))
                .vocabSize(f.integer("vocab_size"))
                .maxPositionEmbeddings(f.integer("n_positions"))
                .normalization(Norm.Kind.LAYER_NORM)
                .normEpsilon(f.optDouble("layer_norm_epsilon", 1e-5))
                .activation(Activation.GELU_TANH)
                .positionEmbedding(PositionEmbedding.LEARNED_ABSOLUTE)
                .addQkvBias(true)
                .addBiasLinear(true)
                .tieEmbeddings(f.optBool("tie_word_embeddings", true))
                .build();
    }

    private static double ropeTheta(Fields f) {
        JsonElement params = f.json.get("rope_parameters");
        if (params != null && params.isJsonObject() && params.getAsJsonObject().has("rope_theta")) {
            return params.getAsJsonObject().get("rope_theta").getAsDouble();
        }
        return f.optDouble("rope_theta", 10000.0);
    }

    /** Typed access to config fields with errors that name the file and the field. */
    private static final class Fields {
        final Path file;
        final JsonObject json;

        Fields(Path file, JsonObject json) {
            this.file = file;
            this.json = json;
        }

        private JsonElement get(String name) {
            JsonElement e = json.get(name);
            return e == null || e.isJsonNull() ? null : e;
        }

        String string(String name) {
            JsonElement e = get(name);
            if (e == null) {
                throw new HfFormatException(file + ": missing field \"" + name + "\"");
            }
            return e.getAsString();
        }

        int integer(String name) {
            JsonElement e = get(name);
            if (e == null) {
                throw new HfFormatException(file + ": missing field \"" + name + "\"");
            }
            return asInt(name, e);
        }

        private int asInt(String name, JsonElement e) {
            try {
                double v = e.getAsDouble();
                if (v != Math.rint(v) || v < 0 || v > Integer.MAX_VALUE) {
                    throw new NumberFormatException();
                }
                return (int) v;
            } catch (RuntimeException ex) {
                throw new HfFormatException(file + ": field \"" + name
                        + "\" must be a non-negative integer, found " + e);
            }
        }

        int optInt(String name, int dflt) {
            JsonElement e = get(name);
            return e == null ? dflt : asInt(name, e);
        }

        double optDouble(String name, double dflt) {
            JsonElement e = get(name);
            return e == null ? dflt : e.getAsDouble();
        }

        boolean optBool(String name, boolean dflt) {
            JsonElement e = get(name);
            return e == null ? dflt : e.getAsBoolean();
        }

        String optString(String name, String dflt) {
            JsonElement e = get(name);
            return e == null ? dflt : e.getAsString().toLowerCase(Locale.ROOT);
        }

        void unsupported(String field, String found, String expected) {
            throw new HfFormatException(file + ": " + field + " = " + found
                    + " is not supported (expected " + expected + ")");
        }
    }
}
