package org.djlmegatron.bridge.hf;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import org.djlmegatron.bridge.convert.ReadChecks;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.djlmegatron.io.SafetensorsReader;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * A Hugging Face checkpoint directory ({@code config.json} plus {@code model.safetensors} or a
 * sharded index). {@link #loadInto} fills a {@link GPTModel} of any tensor-parallel size, each
 * rank reading only its own shard of every tensor. Thread-safe: ranks may load concurrently.
 */
public final class HfCheckpoint implements AutoCloseable {

    private static final Pattern LAYER = Pattern.compile("decoder\\.layers\\.(\\d+)\\.(.+)");
    private static final Pattern HF_EXPERT = Pattern.compile(".*\\.experts\\.(\\d+)\\..*");
    private static final Pattern EXPERT = Pattern.compile("mlp\\.experts\\.local_experts\\.(\\d+)\\.(.+)");
    /** Buffers some checkpoints carry that are not parameters. */
    private static final Pattern IGNORED = Pattern.compile(".*(rotary_emb\\.inv_freq|attn\\.bias|attn\\.masked_bias)$");

    private final Path dir;
    private final HfConfig config;
    private final SafetensorsReader reader;

    private HfCheckpoint(Path dir, HfConfig config, SafetensorsReader reader) {
        this.dir = dir;
        this.config = config;
        this.reader = reader;
    }

    /** Opens a checkpoint directory and validates its config and safetensors headers. */
    public static HfCheckpoint open(Path dir) {
        if (!Files.isDirectory(dir)) {
            throw new HfFormatException(dir + ": not a directory");
        }
        HfConfig config = HfConfig.read(dir);
        return new HfCheckpoint(dir, config, SafetensorsReader.open(dir));
    }

    public Path directory() {
        return dir;
    }

    public String modelType() {
        return config.modelType();
    }

    public TransformerConfig config() {
        return config.config();
    }

    /**
     * Copies this rank's shard of every parameter into {@code model}; fails, naming the tensor,
     * when a weight is missing, has a shape the config does not imply, or is not used.
     */
    public void loadInto(GPTModel model) {
        loadInto(model, ReadChecks.ALL);
    }

    /** As {@link #loadInto(GPTModel)}, refusing non-finite weights unless {@code checks} allows them. */
    public void loadInto(GPTModel model, ReadChecks checks) {
        NDManager target = model.rankContext().manager();
        Set<String> used = new HashSet<>();
        try (NDManager tmp = target.newSubManager()) {
            ShardReads reads = new ShardReads(reader, tmp);
            for (ShardedParameter p : model.parameters()) {
                NDArray shard = read(reads, p, used);
                if (!checks.allowNonFinite() && shard.isNaN().logicalOr(shard.isInfinite()).any().getBoolean()) {
                    // only a damaged tensor is copied out, to count and locate its bad values
                    checks.requireFinite(dir.toString(), p.name(), shard.toType(DataType.FLOAT32, true).toFloatArray());
                }
                shard.attach(target);
                model.installShard(p, shard);
            }
        }
        if (model.isFirstStage() && model.isLastStage()) { // a pipeline stage reads only its part
            checkAllUsed(used, model.rankContext().group(org.djlmegatron.parallel.GroupKind.EXPERT));
        }
    }

    /** Every tensor is used; under expert parallelism another rank's experts are that rank's to check. */
    private void checkAllUsed(Set<String> used, org.djlmegatron.comm.ProcessGroup ep) {
        int local = config().numExperts() / Math.max(1, ep.size());
        for (String key : reader.keys()) {
            Matcher e = HF_EXPERT.matcher(key);
            if (ep.size() > 1 && e.matches() && Integer.parseInt(e.group(1)) / local != ep.rank()) {
                continue;
            }
            if (!used.contains(key) && !IGNORED.matcher(key).matches()) {
                throw new HfFormatException(reader.source() + ": tensor \"" + key
                        + "\" is not used by the model that config.json describes (model_type "
                        + modelType() + ", " + config().numLayers() + " layers)");
            }
        }
    }

    private NDArray read(ShardReads r, ShardedParameter p, Set<String> used) {
        return "gpt2".equals(modelType()) ? gpt2(r, p, used) : llama(r, p, used);
    }

    private NDArray llama(ShardReads r, ShardedParameter p, Set<String> used) {
        String n = p.name();
        switch (n) {
            case "embedding.word_embeddings.weight":
                return r.direct(use(used, "model.embed_tokens.weight"), p);
            case "decoder.final_layernorm.weight":
                return r.direct(use(used, "model.norm.weight"), p);
            case "output_layer.weight":
                return r.direct(use(used, "lm_head.weight"), p);
            default:
                break;
        }
        Matcher m = matchLayer(n);
        String hf = "model.layers." + m.group(1) + ".";
        String rest = m.group(2);
        Matcher e = EXPERT.matcher(rest);
        if (e.matches()) {
            return expert(r, p, used, hf, e.group(1), e.group(2));
        }
        switch (rest) {
            case "input_layernorm.weight":
                return r.direct(use(used, hf + "input_layernorm.weight"), p);
            case "pre_mlp_layernorm.weight":
                return r.direct(use(used, hf + "post_attention_layernorm.weight"), p);
            case "self_attention.q_layernorm.weight":
                return r.direct(use(used, hf + "self_attn.q_norm.weight"), p);
            case "self_attention.k_layernorm.weight":
                return r.direct(use(used, hf + "self_attn.k_norm.weight"), p);
            case "self_attention.linear_proj.weight":
                return r.direct(use(used, hf + "self_attn.o_proj.weight"), p);
            case "self_attention.linear_qkv.weight":
            case "self_attention.linear_qkv.bias":
                String suffix = rest.endsWith("weight") ? "weight" : "bias";
                return qkvSeparate(r, p, used, hf + "self_attn.", suffix);
            case "mlp.linear_fc1.weight":
                return r.gated(use(used, hf + "mlp.gate_proj.weight"), use(used, hf + "mlp.up_proj.weight"), p);
            case "mlp.linear_fc2.weight":
                return r.direct(use(used, hf + "mlp.down_proj.weight"), p);
            case "mlp.shared_experts.linear_fc1.weight":
                return r.gated(use(used, hf + "mlp.shared_expert.gate_proj.weight"),
                        use(used, hf + "mlp.shared_expert.up_proj.weight"), p);
            case "mlp.shared_experts.linear_fc2.weight":
                return r.direct(use(used, hf + "mlp.shared_expert.down_proj.weight"), p);
            case "mlp.shared_experts.gate_weight":
                return r.direct(use(used, hf + "mlp.shared_expert_gate.weight"), p);
            case "mlp.router.weight":
                String gate = modelType().equals("mixtral") ? "block_sparse_moe.gate.weight" : "mlp.gate.weight";
                return r.direct(use(used, hf + gate), p);
            default:
                throw unmapped(n);
        }
    }

    private NDArray expert(ShardReads r, ShardedParameter p, Set<String> used, String hf, String e, String rest) {
        boolean mixtral = modelType().equals("mixtral");
        String base = hf + (mixtral ? "block_sparse_moe.experts." : "mlp.experts.") + e + ".";
        switch (rest) {
            case "linear_fc1.weight":
                return mixtral
                        ? r.gated(use(used, base + "w1.weight"), use(used, base + "w3.weight"), p)
                        : r.gated(use(used, base + "gate_proj.weight"), use(used, base + "up_proj.weight"), p);
            case "linear_fc2.weight":
                return r.direct(use(used, base + (mixtral ? "w2.weight" : "down_proj.weight")), p);
            default:
                throw unmapped(p.name());
        }
    }

    /** q_proj/k_proj/v_proj (weights or biases) into Megatron's grouped layout, this rank's groups. */
    private NDArray qkvSeparate(ShardReads r, ShardedParameter p, Set<String> used, String prefix, String suffix) {
        TransformerConfig c = config();
        int d = c.kvChannels();
        int qpg = c.headsPerGroup();
        int localGroups = c.numQueryGroups() / p.tpSize();
        long g0 = (long) localGroups * p.tpRank();
        String q = use(used, prefix + "q_proj." + suffix);
        String k = use(used, prefix + "k_proj." + suffix);
        String v = use(used, prefix + "v_proj." + suffix);
        boolean weight = suffix.equals("weight");
        long[] qShape = weight ? new long[] {(long) c.numAttentionHeads() * d, c.hiddenSize()}
                : new long[] {(long) c.numAttentionHeads() * d};
        long[] kvShape = weight ? new long[] {(long) c.numQueryGroups() * d, c.hiddenSize()}
                : new long[] {(long) c.numQueryGroups() * d};
        r.expect(q, qShape, p);
        r.expect(k, kvShape, p);
        r.expect(v, kvShape, p);
        return r.qkv(r.rows(q, g0 * qpg * d, (long) localGroups * qpg * d),
                r.rows(k, g0 * d, (long) localGroups * d),
                r.rows(v, g0 * d, (long) localGroups * d), localGroups);
    }

    private NDArray gpt2(ShardReads r, ShardedParameter p, Set<String> used) {
        String n = p.name();
        switch (n) {
            case "embedding.word_embeddings.weight":
                return r.direct(use(used, "transformer.wte.weight"), p);
            case "embedding.position_embeddings.weight":
                return r.direct(use(used, "transformer.wpe.weight"), p);
            case "decoder.final_layernorm.weight":
                return r.direct(use(used, "transformer.ln_f.weight"), p);
            case "decoder.final_layernorm.bias":
                return r.direct(use(used, "transformer.ln_f.bias"), p);
            case "output_layer.weight":
                return r.direct(use(used, "lm_head.weight"), p);
            default:
                break;
        }
        Matcher m = matchLayer(n);
        String hf = "transformer.h." + m.group(1) + ".";
        String rest = m.group(2);
        switch (rest) {
            case "input_layernorm.weight":
            case "input_layernorm.bias":
                return r.direct(use(used, hf + "ln_1." + last(rest)), p);
            case "pre_mlp_layernorm.weight":
            case "pre_mlp_layernorm.bias":
                return r.direct(use(used, hf + "ln_2." + last(rest)), p);
            case "self_attention.linear_qkv.weight":
            case "self_attention.linear_qkv.bias":
                return gpt2Qkv(r, p, use(used, hf + "attn.c_attn." + last(rest)));
            case "self_attention.linear_proj.weight":
                return r.transposed(use(used, hf + "attn.c_proj.weight"), p);
            case "self_attention.linear_proj.bias":
                return r.direct(use(used, hf + "attn.c_proj.bias"), p);
            case "mlp.linear_fc1.weight":
                return r.transposed(use(used, hf + "mlp.c_fc.weight"), p);
            case "mlp.linear_fc1.bias":
                return r.direct(use(used, hf + "mlp.c_fc.bias"), p);
            case "mlp.linear_fc2.weight":
                return r.transposed(use(used, hf + "mlp.c_proj.weight"), p);
            case "mlp.linear_fc2.bias":
                return r.direct(use(used, hf + "mlp.c_proj.bias"), p);
            default:
                throw unmapped(n);
        }
    }

    /**
     * GPT-2's c_attn: Conv1D {@code [hidden, 3*hidden]} (bias {@code [3*hidden]}) with all queries,
     * then all keys, then all values along the output axis; every head is its own group.
     */
    private NDArray gpt2Qkv(ShardReads r, ShardedParameter p, String name) {
        TransformerConfig c = config();
        long hidden = c.hiddenSize();
        int d = c.kvChannels();
        int localHeads = c.numAttentionHeads() / p.tpSize();
        long start = (long) localHeads * d * p.tpRank();
        long len = (long) localHeads * d;
        boolean weight = name.endsWith("weight");
        r.expect(name, weight ? new long[] {hidden, 3 * hidden} : new long[] {3 * hidden}, p);
        NDArray[] parts = new NDArray[3];
        for (int i = 0; i < 3; i++) {
            parts[i] = weight
                    ? r.columns(name, i * hidden + start, len).transpose()
                    : r.rows(name, i * hidden + start, len);
        }
        return r.qkv(parts[0], parts[1], parts[2], localHeads);
    }

    private static String last(String rest) {
        return rest.substring(rest.lastIndexOf('.') + 1);
    }

    private static String use(Set<String> used, String name) {
        used.add(name);
        return name;
    }

    private Matcher matchLayer(String name) {
        Matcher m = LAYER.matcher(name);
        if (!m.matches()) {
            throw unmapped(name);
        }
        return m;
    }

    private HfFormatException unmapped(String name) {
        return new HfFormatException("no Hugging Face tensor maps to " + name + " for model_type " + modelType());
    }

    @Override
    public void close() {
        reader.close();
    }
}
