package org.djlmegatron.bridge.megatron;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.bridge.hf.HfConfig;
import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.io.torch.PyObject;
import org.djlmegatron.io.torch.TorchTypes;
import org.djlmegatron.nn.Norm;
import org.djlmegatron.transformer.RopeScaling;
import org.djlmegatron.transformer.TransformerConfig;
import org.djlmegatron.transformer.TransformerConfig.Activation;
import org.djlmegatron.transformer.TransformerConfig.PositionEmbedding;

/**
 * The model config under Megatron-LM's argument names ({@code num_layers}, {@code swiglu},
 * {@code untie_embeddings_and_output_weights}, ...): read from a checkpoint's {@code args}
 * namespace or from a JSON file of the same names, and written back as {@code args}. A field
 * that is absent takes Megatron-LM's command-line default; options the model cannot honour
 * (rope types other than llama3 and linear, exact GELU, sigmoid routers, ...) are refused by name.
 */
public final class MegatronConfig {

    /** llama3 parameters Megatron-LM fixes; only our own checkpoints record them (when not its values). */
    private static final String LOW_FREQ = "rope_scaling_low_freq_factor";
    private static final String HIGH_FREQ = "rope_scaling_high_freq_factor";
    private static final String ORIGINAL_MAX = "rope_scaling_original_max_position_embeddings";

    private final Map<String, Object> fields;
    private final String where;

    private MegatronConfig(Map<String, Object> fields, String where) {
        this.fields = fields;
        this.where = where;
    }

    /** From a checkpoint's {@code args} ({@code argparse.Namespace}). */
    public static TransformerConfig fromArgs(PyObject args, String where) {
        Map<String, Object> f = new LinkedHashMap<>();
        args.fields().forEach((k, v) -> f.put(String.valueOf(k), v));
        return new MegatronConfig(f, where + " args").toConfig();
    }

    /**
     * From a JSON file: an object of Megatron argument names, or a Hugging Face {@code config.json}
     * (recognised by its {@code model_type}).
     */
    public static TransformerConfig fromFile(Path file) {
        JsonObject json;
        try {
            json = JsonParser.parseString(Files.readString(file)).getAsJsonObject();
        } catch (IOException | RuntimeException e) {
            throw new CheckpointException(file + ": cannot read a JSON object: " + e.getMessage(), e);
        }
        if (json.has("model_type")) {
            return HfConfig.parse(file, json).config();
        }
        return fromJson(json, file.toString());
    }

    /** From a JSON object of Megatron argument names; {@code where} names it in errors. */
    public static TransformerConfig fromJson(JsonObject json, String where) {
        Map<String, Object> f = new LinkedHashMap<>();
        json.entrySet().forEach(e -> f.put(e.getKey(), plain(e.getValue())));
        return new MegatronConfig(f, where).toConfig();
    }

    /** The config as a JSON object of Megatron argument names (what {@link #fromFile} reads). */
    public static JsonObject toJson(TransformerConfig c) {
        JsonObject o = new JsonObject();
        fieldsOf(c).forEach((k, v) -> {
            if (v == null) {
                o.add(k, com.google.gson.JsonNull.INSTANCE);
            } else if (v instanceof Boolean b) {
                o.addProperty(k, b);
            } else if (v instanceof Number n) {
                o.addProperty(k, n);
            } else {
                o.addProperty(k, v.toString());
            }
        });
        return o;
    }

    /**
     * A checkpoint's {@code args}: the model fields, the parallel sizes the files are split in, and
     * the parameter precision.
     */
    public static PyObject toArgs(TransformerConfig c, ParallelLayout layout, SafetensorsDType dtype) {
        checkMegatronExpressible(c);
        Map<String, Object> f = new LinkedHashMap<>(fieldsOf(c));
        f.put("tensor_model_parallel_size", (long) layout.tp());
        f.put("pipeline_model_parallel_size", (long) layout.pp());
        f.put("expert_model_parallel_size", (long) layout.ep());
        putPipelineSplit(f, c, layout);
        f.put("params_dtype", TorchTypes.dtypeConstant(dtype));
        f.put("fp16", dtype == SafetensorsDType.F16);
        f.put("bf16", dtype == SafetensorsDType.BF16);
        return PyObject.withFields("argparse.Namespace", f);
    }

    /**
     * Megatron's arguments for the pipeline split: {@code virtual_pipeline_model_parallel_size} and
     * {@code num_layers_per_virtual_pipeline_stage} with interleaving, {@code
     * decoder_first/last_pipeline_num_layers} for an uneven split (None when unused).
     */
    private static void putPipelineSplit(Map<String, Object> f, TransformerConfig c, ParallelLayout layout) {
        boolean virtual = layout.vp() > 1;
        f.put("virtual_pipeline_model_parallel_size", virtual ? (Object) (long) layout.vp() : null);
        f.put("num_layers_per_virtual_pipeline_stage",
                virtual ? (Object) (long) (c.numLayers() / (layout.pp() * layout.vp())) : null);
        List<Integer> counts = layout.stageLayers();
        if (!counts.isEmpty() && virtual) {
            throw new CheckpointException("layout " + layout + ": Megatron has no uneven split with virtual stages");
        }
        for (int s = 2; s < counts.size() - 1; s++) {
            if (!counts.get(s).equals(counts.get(1))) {
                throw new CheckpointException("layout " + layout + ": Megatron splits the middle stages evenly (only "
                        + "--decoder-first/last-pipeline-num-layers differ)");
            }
        }
        f.put("decoder_first_pipeline_num_layers", counts.isEmpty() ? null : (Object) (long) counts.get(0));
        f.put("decoder_last_pipeline_num_layers", counts.isEmpty() ? null : (Object) (long) counts.get(counts.size() - 1));
    }

    private static Map<String, Object> fieldsOf(TransformerConfig c) {
        Map<String, Object> f = new LinkedHashMap<>();
        boolean rope = c.positionEmbedding() == PositionEmbedding.ROPE;
        f.put("num_layers", (long) c.numLayers());
        f.put("hidden_size", (long) c.hiddenSize());
        f.put("ffn_hidden_size", (long) c.ffnHiddenSize());
        f.put("num_attention_heads", (long) c.numAttentionHeads());
        f.put("group_query_attention", c.numQueryGroups() != c.numAttentionHeads());
        f.put("num_query_groups", (long) c.numQueryGroups());
        f.put("kv_channels", (long) c.kvChannels());
        f.put("max_position_embeddings", (long) c.maxPositionEmbeddings());
        f.put("position_embedding_type", rope ? "rope" : "learned_absolute");
        f.put("add_position_embedding", !rope);
        f.put("use_rotary_position_embeddings", rope);
        f.put("rotary_base", c.rotaryBase() == Math.rint(c.rotaryBase()) ? (Object) (long) c.rotaryBase()
                : (Object) c.rotaryBase());
        f.put("rotary_percent", 1.0);
        putRopeScaling(f, c.ropeScaling());
        f.put("normalization", c.normalization() == Norm.Kind.RMS_NORM ? "RMSNorm" : "LayerNorm");
        f.put("norm_epsilon", c.normEpsilon());
        f.put("swiglu", c.isGated());
        f.put("openai_gelu", c.activation() == Activation.GELU_TANH);
        f.put("add_bias_linear", c.addBiasLinear());
        f.put("add_qkv_bias", c.addQkvBias());
        f.put("qk_layernorm", c.qkLayernorm());
        f.put("untie_embeddings_and_output_weights", !c.tieEmbeddings());
        f.put("padded_vocab_size", (long) c.vocabSize());
        f.put("num_experts", c.isMoe() ? (Object) (long) c.numExperts() : null);
        if (c.isMoe()) {
            f.put("moe_router_topk", (long) c.moeRouterTopK());
            f.put("moe_ffn_hidden_size", (long) c.moeFfnHiddenSize());
            // Megatron's default (top-k of the logits, softmax over those) renormalises
            f.put("moe_router_pre_softmax", !c.moeRenormalizeTopK());
            f.put("moe_router_score_function", "softmax");
            f.put("moe_shared_expert_intermediate_size", c.hasSharedExperts()
                    ? (Object) (long) c.moeSharedExpertIntermediateSize() : null);
            f.put("moe_shared_expert_gate", c.moeSharedExpertGate());
        }
        return f;
    }

    private TransformerConfig toConfig() {
        int hidden = integer("hidden_size", null);
        int heads = integer("num_attention_heads", null);
        boolean gqa = bool("group_query_attention", fields.get("num_query_groups") != null);
        boolean rope = positionEmbedding();
        boolean swiglu = bool("swiglu", false);
        int ffnDefault = swiglu ? (4 * hidden * 2 / 3) / 64 * 64 : 4 * hidden;
        int ffn = integer("ffn_hidden_size", ffnDefault);
        refuseUnless("rotary_percent", 1.0);
        refuseUnless("rotary_interleaved", false);
        refuseUnless("apply_layernorm_1p", false);
        refuseUnless("squared_relu", false);
        refuseUnless("moe_router_topk_scaling_factor", null);
        String score = string("moe_router_score_function", "softmax");
        if (!score.equals("softmax")) {
            throw unsupported("moe_router_score_function", score, "softmax");
        }
        Activation act;
        if (swiglu) {
            act = Activation.SWIGLU;
        } else if (bool("openai_gelu", false)) {
            act = Activation.GELU_TANH;
        } else {
            throw new CheckpointException(where + ": the MLP activation is exact GELU (neither swiglu nor openai_gelu"
                    + " set), which GPTModel does not implement; it has SwiGLU and tanh-GELU");
        }
        String norm = string("normalization", "LayerNorm");
        if (!norm.equals("LayerNorm") && !norm.equals("RMSNorm")) {
            throw unsupported("normalization", norm, "LayerNorm or RMSNorm");
        }
        boolean biasLinear = bool("add_bias_linear", true);
        int experts = integer("num_experts", 0);
        if (experts > 0 && biasLinear) {
            throw new CheckpointException(where + ": mixture-of-experts with add_bias_linear (expert biases) is not "
                    + "supported");
        }
        TransformerConfig.Builder b = TransformerConfig.builder()
                .numLayers(integer("num_layers", null))
                .hiddenSize(hidden)
                .numAttentionHeads(heads)
                .numQueryGroups(gqa ? integer("num_query_groups", null) : heads)
                .kvChannels(integer("kv_channels", hidden / heads))
                .ffnHiddenSize(ffn)
                .vocabSize(fields.get("padded_vocab_size") != null ? integer("padded_vocab_size", null)
                        : integer("vocab_size", null))
                .maxPositionEmbeddings(integer("max_position_embeddings", rope ? 4096 : null))
                .normalization(norm.equals("RMSNorm") ? Norm.Kind.RMS_NORM : Norm.Kind.LAYER_NORM)
                .normEpsilon(fields.get("norm_epsilon") != null ? number("norm_epsilon", 0)
                        : number("layernorm_epsilon", 1e-5))
                .activation(act)
                .positionEmbedding(rope ? PositionEmbedding.ROPE : PositionEmbedding.LEARNED_ABSOLUTE)
                .rotaryBase(number("rotary_base", 10000))
                .ropeScaling(rope ? ropeScaling() : null)
                .addBiasLinear(biasLinear)
                .addQkvBias(biasLinear || bool("add_qkv_bias", false))
                .qkLayernorm(bool("qk_layernorm", false))
                .tieEmbeddings(!bool("untie_embeddings_and_output_weights", false));
        if (experts > 0) {
            b.numExperts(experts)
                    .moeRouterTopK(integer("moe_router_topk", 2))
                    .moeFfnHiddenSize(integer("moe_ffn_hidden_size", ffn))
                    .moeRenormalizeTopK(!bool("moe_router_pre_softmax", false))
                    .moeSharedExpertIntermediateSize(integer("moe_shared_expert_intermediate_size", 0))
                    .moeSharedExpertGate(bool("moe_shared_expert_gate", false));
        }
        try {
            return b.build();
        } catch (IllegalArgumentException e) {
            throw new CheckpointException(where + ": " + e.getMessage(), e);
        }
    }

    /**
     * Megatron's rope scaling arguments: {@code use_rope_scaling} with {@code rope_scaling_factor}
     * (llama3), or an integer {@code rotary_seq_len_interpolation_factor} (linear). Megatron-LM
     * fixes llama3's other parameters (low 1, high 4, original 8192); others are kept under
     * {@code rope_scaling_*} names of our own, which only our checkpoints carry
     * ({@link #toArgs} refuses them).
     */
    private static void putRopeScaling(Map<String, Object> f, RopeScaling s) {
        boolean llama3 = s != null && s.type() == RopeScaling.Type.LLAMA3;
        f.put("use_rope_scaling", llama3);
        f.put("rope_scaling_factor", llama3 ? s.factor() : 8.0);
        f.put("rotary_seq_len_interpolation_factor", null);
        if (llama3 && !s.isMegatronLlama3()) {
            f.put(LOW_FREQ, s.lowFreqFactor());
            f.put(HIGH_FREQ, s.highFreqFactor());
            f.put(ORIGINAL_MAX, (long) s.originalMaxPositionEmbeddings());
        }
        if (s != null && s.type() == RopeScaling.Type.LINEAR) {
            if (s.factor() != Math.rint(s.factor())) {
                throw new CheckpointException("linear rope scaling factor " + s.factor() + " cannot be written as "
                        + "Megatron's rotary_seq_len_interpolation_factor, which is an integer");
            }
            f.put("rotary_seq_len_interpolation_factor", (long) s.factor());
        }
    }

    /** Refuses llama3 parameters Megatron-LM's arguments cannot hold. */
    private static void checkMegatronExpressible(TransformerConfig c) {
        RopeScaling s = c.ropeScaling();
        if (s != null && s.type() == RopeScaling.Type.LLAMA3 && !s.isMegatronLlama3()) {
            throw new CheckpointException("llama3 rope scaling with low_freq_factor " + s.lowFreqFactor()
                    + ", high_freq_factor " + s.highFreqFactor() + ", original_max_position_embeddings "
                    + s.originalMaxPositionEmbeddings() + " cannot be written as Megatron arguments (Megatron-LM fixes "
                    + "them at 1, 4, 8192; only --rope-scaling-factor is an argument)");
        }
    }

    private RopeScaling ropeScaling() {
        Object interpolation = fields.get("rotary_seq_len_interpolation_factor");
        boolean llama3 = bool("use_rope_scaling", false);
        if (llama3 && interpolation != null) {
            throw new CheckpointException(where + ": use_rope_scaling and rotary_seq_len_interpolation_factor are both "
                    + "set; expected one");
        }
        if (llama3) {
            return RopeScaling.llama3(number("rope_scaling_factor", 8.0),
                    number(LOW_FREQ, RopeScaling.MEGATRON_LOW_FREQ_FACTOR),
                    number(HIGH_FREQ, RopeScaling.MEGATRON_HIGH_FREQ_FACTOR),
                    integer(ORIGINAL_MAX, RopeScaling.MEGATRON_ORIGINAL_MAX_POSITION));
        }
        return interpolation == null ? null : RopeScaling.linear(integer("rotary_seq_len_interpolation_factor", null));
    }

    private boolean positionEmbedding() {
        String type = string("position_embedding_type",
                bool("use_rotary_position_embeddings", false) ? "rope" : "learned_absolute");
        if (!type.equals("rope") && !type.equals("learned_absolute")) {
            throw unsupported("position_embedding_type", type, "rope or learned_absolute");
        }
        return type.equals("rope");
    }

    private void refuseUnless(String name, Object expected) {
        Object v = fields.get(name);
        if (v == null || v.equals(expected) || v instanceof Number n && expected instanceof Number e
                && n.doubleValue() == e.doubleValue()) {
            return;
        }
        throw unsupported(name, String.valueOf(v), String.valueOf(expected));
    }

    private CheckpointException unsupported(String name, String found, String expected) {
        return new CheckpointException(where + ": " + name + " = " + found + " is not supported (expected "
                + expected + ")");
    }

    private int integer(String name, Integer dflt) {
        Object v = fields.get(name);
        if (v == null) {
            if (dflt == null) {
                throw new CheckpointException(where + ": field \"" + name + "\" is missing");
            }
            return dflt;
        }
        if (v instanceof Long l && l >= 0 && l <= Integer.MAX_VALUE) {
            return (int) (long) l;
        }
        throw new CheckpointException(where + ": field \"" + name + "\" must be a non-negative integer, found " + v);
    }

    private double number(String name, double dflt) {
        Object v = fields.get(name);
        if (v == null) {
            return dflt;
        }
        if (v instanceof Number n) {
            return n.doubleValue();
        }
        throw new CheckpointException(where + ": field \"" + name + "\" must be a number, found " + v);
    }

    private boolean bool(String name, boolean dflt) {
        Object v = fields.get(name);
        if (v == null) {
            return dflt;
        }
        if (v instanceof Boolean b) {
            return b;
        }
        throw new CheckpointException(where + ": field \"" + name + "\" must be true or false, found " + v);
    }

    private String string(String name, String dflt) {
        Object v = fields.get(name);
        if (v == null) {
            return dflt;
        }
        if (v instanceof String s) {
            return s;
        }
        throw new CheckpointException(where + ": field \"" + name + "\" must be a string, found " + v);
    }

    /** JSON scalars as the pickle reader would give them: integers as Long, other numbers Double. */
    private static Object plain(JsonElement e) {
        if (e == null || e.isJsonNull()) {
            return null;
        }
        if (!e.isJsonPrimitive()) {
            return e.toString();
        }
        JsonPrimitive p = e.getAsJsonPrimitive();
        if (p.isBoolean()) {
            return p.getAsBoolean();
        }
        if (p.isNumber()) {
            double d = p.getAsDouble();
            String text = p.getAsString();
            boolean integral = !text.contains(".") && !text.contains("e") && !text.contains("E");
            return integral && d == Math.rint(d) ? (Object) p.getAsLong() : (Object) d;
        }
        return p.getAsString();
    }
}
