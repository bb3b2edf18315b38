package org.djlmegatron.bridge.hf;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.djlmegatron.bridge.CheckpointConverter;
import org.djlmegatron.bridge.CheckpointFormat;
import org.djlmegatron.bridge.LogitsRunner;
import org.djlmegatron.bridge.convert.HostTensor;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.bridge.convert.SafetensorsFileWriter;
import org.djlmegatron.bridge.convert.SafetensorsRawReader;
import org.djlmegatron.bridge.export.HfWeightSink;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.parallel.RankGrid;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A Qwen2-MoE checkpoint written here by hand under transformers' names
 * ({@code Qwen2MoeSparseMoeBlock}: {@code gate}, {@code experts.E}, {@code shared_expert},
 * {@code shared_expert_gate}): its tensors land in Megatron's {@code shared_experts} parameters
 * (gate and up stacked into {@code linear_fc1}, the gate into {@code gate_weight}), a conversion
 * to Megatron at TP 2 x EP 2 and back is bit-exact, and the converted shards give the same logits
 * at TP 2 x EP 2 (+SP) as the HF checkpoint on one rank. The block's arithmetic is checked
 * against doubles by {@code SharedExpertTest}.
 */
class Qwen2MoeCheckpointTest {

    static final int H = 32;
    static final int HEADS = 4;
    static final int KV = 2;
    static final int D = 8;
    static final int E = 4;
    static final int MOE_FFN = 8;
    static final int SHARED = 12;
    static final int VOCAB = 64;

    @TempDir
    Path tmp;

    @Test
    void sharedExpertTensorsLoadIntoSharedExperts() throws IOException {
        Path hf = tmp.resolve("hf");
        Map<String, float[]> t = writeCheckpoint(hf);
        HfConfig config = HfConfig.read(hf);
        assertThat(config.modelType()).isEqualTo("qwen2_moe");
        assertThat(config.config().moeSharedExpertIntermediateSize()).isEqualTo(SHARED);
        assertThat(config.config().moeSharedExpertGate()).isTrue();
        Map<String, float[]> got = LocalWorld.run(RankGrid.single(), ctx -> {
            GPTModel model = new GPTModel(ctx, config.config(), false);
            try (HfCheckpoint ckpt = HfCheckpoint.open(hf)) {
                ckpt.loadInto(model);
            }
            Map<String, float[]> out = new HashMap<>();
            for (ShardedParameter p : model.parameters()) {
                out.put(p.name(), p.parameter().getArray().toFloatArray());
            }
            return out;
        }).get(0);
        for (int l = 0; l < 2; l++) {
            String m = "decoder.layers." + l + ".mlp.";
            String hfm = "model.layers." + l + ".mlp.";
            assertThat(got.get(m + "shared_experts.linear_fc1.weight"))
                    .containsExactly(concat(t.get(hfm + "shared_expert.gate_proj.weight"),
                            t.get(hfm + "shared_expert.up_proj.weight")));
            assertThat(got.get(m + "shared_experts.linear_fc2.weight"))
                    .containsExactly(t.get(hfm + "shared_expert.down_proj.weight"));
            assertThat(got.get(m + "shared_experts.gate_weight")).containsExactly(t.get(hfm + "shared_expert_gate.weight"));
            assertThat(got.get(m + "router.weight")).containsExactly(t.get(hfm + "gate.weight"));
        }
    }

    @Test
    void convertsToMegatronShardsAndBackBitExact() throws IOException {
        Path hf = tmp.resolve("hf");
        writeCheckpoint(hf);
        Path megatron = convert(hf, tmp.resolve("megatron"), CheckpointFormat.MEGATRON, new ParallelLayout(2, 1, 2));
        Path back = convert(megatron, tmp.resolve("back"), CheckpointFormat.HF, ParallelLayout.SINGLE);
        assertThat(HfConfig.read(back).modelType()).isEqualTo("qwen2_moe");
        assertThat(HfConfig.read(back).config()).isEqualTo(HfConfig.read(hf).config());
        try (SafetensorsRawReader a = SafetensorsRawReader.open(back); SafetensorsRawReader e = SafetensorsRawReader.open(hf)) {
            assertThat(a.keys()).containsExactlyInAnyOrderElementsOf(e.keys());
            for (String key : e.keys()) {
                assertThat(a.read(key, null).data()).as(key).isEqualTo(e.read(key, null).data());
            }
        }
        long[] ids = new long[2 * 8];
        Random rnd = new Random(5);
        for (int i = 0; i < ids.length; i++) {
            ids[i] = rnd.nextInt(VOCAB);
        }
        float[] one = LogitsRunner.logits(hf, null, ids, 2, 1, 1, false);
        float[] sharded = LogitsRunner.logits(megatron, null, ids, 2, 2, 2, true);
        assertThat(sharded).hasSameSizeAs(one);
        for (int i = 0; i < one.length; i++) {
            assertThat(sharded[i]).as("logit %d", i).isCloseTo(one[i], org.assertj.core.data.Offset.offset(1e-5f));
        }
    }

    private static Path convert(Path in, Path out, CheckpointFormat to, ParallelLayout layout) {
        CheckpointConverter.convert(new CheckpointConverter.Options(in, out, to, null, layout, null, null, null,
                HfWeightSink.DEFAULT_MAX_SHARD, false, null));
        return out;
    }

    /** config.json and model.safetensors of a 2-layer Qwen2-MoE with random weights; returns the tensors. */
    static Map<String, float[]> writeCheckpoint(Path dir) throws IOException {
        Files.createDirectories(dir);
        Files.writeString(dir.resolve("config.json"), """
                {"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "vocab_size": %d,
                 "hidden_size": %d, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": %d,
                 "num_key_value_heads": %d, "hidden_act": "silu", "max_position_embeddings": 64,
                 "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": false,
                 "use_sliding_window": false, "decoder_sparse_step": 1, "moe_intermediate_size": %d,
                 "shared_expert_intermediate_size": %d, "num_experts_per_tok": 2, "num_experts": %d,
                 "norm_topk_prob": false, "mlp_only_layers": [], "torch_dtype": "float32"}
                """.formatted(VOCAB, H, HEADS, KV, MOE_FFN, SHARED, E));
        Map<String, long[]> shapes = new LinkedHashMap<>();
        shapes.put("model.embed_tokens.weight", new long[] {VOCAB, H});
        for (int l = 0; l < 2; l++) {
            String p = "model.layers." + l + ".";
            shapes.put(p + "input_layernorm.weight", new long[] {H});
            shapes.put(p + "post_attention_layernorm.weight", new long[] {H});
            for (String proj : List.of("q", "k", "v")) {
                long rows = proj.equals("q") ? HEADS * D : KV * D;
                shapes.put(p + "self_attn." + proj + "_proj.weight", new long[] {rows, H});
                shapes.put(p + "self_attn." + proj + "_proj.bias", new long[] {rows});
            }
            shapes.put(p + "self_attn.o_proj.weight", new long[] {H, HEADS * D});
            shapes.put(p + "mlp.gate.weight", new long[] {E, H});
            for (int e = 0; e < E; e++) {
                mlp(shapes, p + "mlp.experts." + e + ".", MOE_FFN);
            }
            mlp(shapes, p + "mlp.shared_expert.", SHARED);
            shapes.put(p + "mlp.shared_expert_gate.weight", new long[] {1, H});
        }
        shapes.put("model.norm.weight", new long[] {H});
        shapes.put("lm_head.weight", new long[] {VOCAB, H});
        Random rnd = new Random(17);
        Map<String, float[]> values = new LinkedHashMap<>();
        List<SafetensorsFileWriter.Entry> entries = new ArrayList<>();
        shapes.forEach((name, shape) -> {
            long n = 1;
            for (long d : shape) {
                n *= d;
            }
            float[] v = new float[(int) n];
            for (int i = 0; i < v.length; i++) {
                v[i] = name.endsWith("layernorm.weight") || name.equals("model.norm.weight")
                        ? 1 + 0.1f * (float) rnd.nextGaussian() : 0.2f * (float) rnd.nextGaussian();
            }
            values.put(name, v);
            entries.add(new SafetensorsFileWriter.Entry(name, SafetensorsDType.F32, shape));
        });
        try (SafetensorsFileWriter w = SafetensorsFileWriter.create(dir.resolve("model.safetensors"), entries,
                Map.of("format", "pt"))) {
            for (SafetensorsFileWriter.Entry e : entries) {
                ByteBuffer b = ByteBuffer.allocate(values.get(e.name()).length * 4).order(ByteOrder.LITTLE_ENDIAN);
                b.asFloatBuffer().put(values.get(e.name()));
                w.write(e.name(), new HostTensor(SafetensorsDType.F32, e.shape(), b.array()));
            }
            w.finish();
        }
        return values;
    }

    private static void mlp(Map<String, long[]> shapes, String prefix, int ffn) {
        shapes.put(prefix + "gate_proj.weight", new long[] {ffn, H});
        shapes.put(prefix + "up_proj.weight", new long[] {ffn, H});
        shapes.put(prefix + "down_proj.weight", new long[] {H, ffn});
    }

    private static float[] concat(float[] a, float[] b) {
        float[] out = new float[a.length + b.length];
        System.arraycopy(a, 0, out, 0, a.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }
}
