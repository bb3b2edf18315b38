package org.djlmegatron.bridge.export;

import java.util.ArrayList;
import java.util.List;
import java.util.regex.Pattern;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.convert.HostTensor;
import org.djlmegatron.bridge.convert.ParamSpec;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Which Hugging Face tensors make up each Megatron-Core parameter, and how: the same tensor
 * (possibly transposed, for GPT-2's {@code Conv1D}), q/k/v projections grouped per key/value
 * head into {@code linear_qkv}, gate and up projections stacked into {@code linear_fc1}. Works in
 * both directions on raw bytes; every mapping is a permutation, so round trips are bit-exact.
 * The table is in docs/hf-mapping.md and docs/checkpoints.md.
 */
public final class HfTensorMapping {

    /** How the HF tensors combine. */
    public enum Kind {
        /** One tensor, same layout. */
        DIRECT,
        /** One {@code [in, out]} tensor, transposed. */
        TRANSPOSE,
        /** {@code q_proj}, {@code k_proj}, {@code v_proj} grouped per key/value head. */
        QKV,
        /** {@code gate}, {@code up} stacked. */
        GATE_UP,
        /** GPT-2's {@code c_attn}: all q, all k, all v along its output axis, regrouped per head. */
        GPT2_QKV
    }

    /**
     * The HF side of one parameter.
     *
     * @param spec the Megatron-Core parameter
     * @param kind how the tensors combine
     * @param names HF tensor names
     * @param shapes their shapes
     */
    public record Recipe(ParamSpec spec, Kind kind, List<String> names, List<long[]> shapes) {}

    /** Buffers some HF checkpoints carry that are not parameters. */
    public static final Pattern IGNORED = Pattern.compile(".*(rotary_emb\\.inv_freq|attn\\.bias|attn\\.masked_bias)$");

    private final String modelType;
    private final TransformerConfig c;

    public HfTensorMapping(String modelType, TransformerConfig config) {
        this.modelType = modelType;
        this.c = config;
    }

    /** The HF tensors of a parameter. */
    public Recipe recipe(ParamSpec spec) {
        return modelType.equals("gpt2") ? gpt2(spec) : llama(spec);
    }

    private Recipe llama(ParamSpec spec) {
        long[] shape = spec.shape();
        switch (spec.name()) {
            case "embedding.word_embeddings.weight":
                return direct(spec, "model.embed_tokens.weight");
            case "decoder.final_layernorm.weight":
                return direct(spec, "model.norm.weight");
            case "output_layer.weight":
                return direct(spec, "lm_head.weight");
            default:
                break;
        }
        String rest = layerPart(spec);
        String hf = "model.layers." + spec.layer() + ".";
        if (spec.expert() >= 0) {
            boolean mixtral = modelType.equals("mixtral");
            String base = hf + (mixtral ? "block_sparse_moe.experts." : "mlp.experts.") + spec.expert() + ".";
            return switch (ParamSpec.expertPart(spec.name())) {
                case "linear_fc1.weight" -> gateUp(spec, base + (mixtral ? "w1.weight" : "gate_proj.weight"),
                        base + (mixtral ? "w3.weight" : "up_proj.weight"));
                case "linear_fc2.weight" -> direct(spec, base + (mixtral ? "w2.weight" : "down_proj.weight"));
                default -> throw unmapped(spec);
            };
        }
        return switch (rest) {
            case "input_layernorm.weight" -> direct(spec, hf + "input_layernorm.weight");
            case "pre_mlp_layernorm.weight" -> direct(spec, hf + "post_attention_layernorm.weight");
            case "self_attention.q_layernorm.weight" -> direct(spec, hf + "self_attn.q_norm.weight");
            case "self_attention.k_layernorm.weight" -> direct(spec, hf + "self_attn.k_norm.weight");
            case "self_attention.linear_proj.weight" -> direct(spec, hf + "self_attn.o_proj.weight");
            case "self_attention.linear_qkv.weight", "self_attention.linear_qkv.bias" -> {
                String suffix = rest.substring(rest.lastIndexOf('.') + 1);
                long q = (long) c.numAttentionHeads() * c.kvChannels();
                long kv = (long) c.numQueryGroups() * c.kvChannels();
                List<long[]> shapes = shape.length == 2
                        ? List.of(new long[] {q, shape[1]}, new long[] {kv, shape[1]}, new long[] {kv, shape[1]})
                        : List.of(new long[] {q}, new long[] {kv}, new long[] {kv});
                yield new Recipe(spec, Kind.QKV, List.of(hf + "self_attn.q_proj." + suffix,
                        hf + "self_attn.k_proj." + suffix, hf + "self_attn.v_proj." + suffix), shapes);
            }
            case "mlp.linear_fc1.weight" -> gateUp(spec, hf + "mlp.gate_proj.weight", hf + "mlp.up_proj.weight");
            case "mlp.linear_fc2.weight" -> direct(spec, hf + "mlp.down_proj.weight");
            case "mlp.shared_experts.linear_fc1.weight" -> gateUp(spec, hf + "mlp.shared_expert.gate_proj.weight",
                    hf + "mlp.shared_expert.up_proj.weight");
            case "mlp.shared_experts.linear_fc2.weight" -> direct(spec, hf + "mlp.shared_expert.down_proj.weight");
            case "mlp.shared_experts.gate_weight" -> direct(spec, hf + "mlp.shared_expert_gate.weight");
            case "mlp.router.weight" -> direct(spec, hf + (modelType.equals("mixtral")
                    ? "block_sparse_moe.gate.weight" : "mlp.gate.weight"));
            default -> throw unmapped(spec);
        };
    }

    private Recipe gpt2(ParamSpec spec) {
        switch (spec.name()) {
            case "embedding.word_embeddings.weight":
                return direct(spec, "transformer.wte.weight");
            case "embedding.position_embeddings.weight":
                return direct(spec, "transformer.wpe.weight");
            case "decoder.final_layernorm.weight":
                return direct(spec, "transformer.ln_f.weight");
            case "decoder.final_layernorm.bias":
                return direct(spec, "transformer.ln_f.bias");
            case "output_layer.weight":
                return direct(spec, "lm_head.weight");
            default:
                break;
        }
        String rest = layerPart(spec);
        String hf = "transformer.h." + spec.layer() + ".";
        String last = rest.substring(rest.lastIndexOf('.') + 1);
        return switch (rest) {
            case "input_layernorm.weight", "input_layernorm.bias" -> direct(spec, hf + "ln_1." + last);
            case "pre_mlp_layernorm.weight", "pre_mlp_layernorm.bias" -> direct(spec, hf + "ln_2." + last);
            case "self_attention.linear_qkv.weight", "self_attention.linear_qkv.bias" -> {
                long[] s = spec.shape();
                long[] hfShape = s.length == 2 ? new long[] {s[1], s[0]} : s;
                yield new Recipe(spec, Kind.GPT2_QKV, List.of(hf + "attn.c_attn." + last), List.of(hfShape));
            }
            case "self_attention.linear_proj.weight" -> transposed(spec, hf + "attn.c_proj.weight");
            case "self_attention.linear_proj.bias" -> direct(spec, hf + "attn.c_proj.bias");
            case "mlp.linear_fc1.weight" -> transposed(spec, hf + "mlp.c_fc.weight");
            case "mlp.linear_fc1.bias" -> direct(spec, hf + "mlp.c_fc.bias");
            case "mlp.linear_fc2.weight" -> transposed(spec, hf + "mlp.c_proj.weight");
            case "mlp.linear_fc2.bias" -> direct(spec, hf + "mlp.c_proj.bias");
            default -> throw unmapped(spec);
        };
    }

    /** The Megatron-Core tensor from its HF tensors (in {@link Recipe#names} order). */
    public HostTensor toMcore(Recipe r, List<HostTensor> hf) {
        long[] shape = r.spec().shape();
        HostTensor first = hf.get(0);
        int es = first.dtype().elementSize();
        int rowBytes = shape.length == 2 ? (int) shape[1] * es : es;
        byte[] data = switch (r.kind()) {
            case DIRECT -> first.data();
            case TRANSPOSE -> RowShuffle.transpose(first.data(), (int) shape[1], (int) shape[0], es);
            case GATE_UP -> RowShuffle.concat(first.data(), hf.get(1).data());
            case QKV -> RowShuffle.group(first.data(), hf.get(1).data(), hf.get(2).data(), c.numQueryGroups(),
                    c.headsPerGroup() * c.kvChannels(), c.kvChannels(), rowBytes);
            case GPT2_QKV -> {
                byte[] rows = shape.length == 2
                        ? RowShuffle.transpose(first.data(), (int) shape[1], (int) shape[0], es) : first.data();
                byte[][] qkv = RowShuffle.split(rows, 3);
                yield RowShuffle.group(qkv[0], qkv[1], qkv[2], c.numAttentionHeads(), c.kvChannels(),
                        c.kvChannels(), rowBytes);
            }
        };
        return new HostTensor(first.dtype(), shape, data);
    }

    /** The HF tensors of a Megatron-Core tensor (in {@link Recipe#names} order). */
    public List<HostTensor> toHf(Recipe r, HostTensor mcore) {
        long[] shape = r.spec().shape();
        int es = mcore.dtype().elementSize();
        int rowBytes = shape.length == 2 ? (int) shape[1] * es : es;
        byte[] d = mcore.data();
        List<byte[]> parts = new ArrayList<>();
        switch (r.kind()) {
            case DIRECT -> parts.add(d);
            case TRANSPOSE -> parts.add(RowShuffle.transpose(d, (int) shape[0], (int) shape[1], es));
            case GATE_UP -> parts.addAll(List.of(RowShuffle.split(d, 2)));
            case QKV -> parts.addAll(List.of(RowShuffle.ungroup(d, c.numQueryGroups(),
                    c.headsPerGroup() * c.kvChannels(), c.kvChannels(), rowBytes)));
            case GPT2_QKV -> {
                byte[][] qkv = RowShuffle.ungroup(d, c.numAttentionHeads(), c.kvChannels(), c.kvChannels(), rowBytes);
                byte[] rows = RowShuffle.concat(qkv);
                parts.add(shape.length == 2 ? RowShuffle.transpose(rows, (int) shape[0], (int) shape[1], es) : rows);
            }
            default -> throw new IllegalStateException(r.kind().toString());
        }
        List<HostTensor> out = new ArrayList<>();
        for (int i = 0; i < parts.size(); i++) {
            out.add(new HostTensor(mcore.dtype(), r.shapes().get(i), parts.get(i)));
        }
        return out;
    }

    private static Recipe direct(ParamSpec spec, String name) {
        return new Recipe(spec, Kind.DIRECT, List.of(name), List.of(spec.shape()));
    }

    private static Recipe transposed(ParamSpec spec, String name) {
        long[] s = spec.shape();
        return new Recipe(spec, Kind.TRANSPOSE, List.of(name), List.<long[]>of(new long[] {s[1], s[0]}));
    }

    private static Recipe gateUp(ParamSpec spec, String gate, String up) {
        long[] half = spec.shape();
        half[0] /= 2;
        return new Recipe(spec, Kind.GATE_UP, List.of(gate, up), List.of(half, half.clone()));
    }

    private String layerPart(ParamSpec spec) {
        String rest = ParamSpec.layerPart(spec.name());
        if (rest == null) {
            throw unmapped(spec);
        }
        return rest;
    }

    private CheckpointException unmapped(ParamSpec spec) {
        return new CheckpointException("no Hugging Face tensor maps to " + spec.name() + " for model_type " + modelType);
    }
}
