package org.djlmegatron.bridge;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.djlmegatron.io.SafetensorsReader;

/** The shared reference fixtures, read in place, and helpers the bridge tests share. */
public final class BridgeFixtures {

    public static final String[] HF_MODELS = {"gpt2", "llama", "mixtral", "qwen2", "qwen3", "qwen3_moe"};

    /**
     * Megatron arguments of the fixtures' Megatron-Core models (fixtures/README.md): their
     * checkpoints carry no {@code args}.
     */
    public static final String MCORE_GPT_CONFIG = """
            {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "group_query_attention": true,
             "num_query_groups": 2, "ffn_hidden_size": 160, "normalization": "RMSNorm", "norm_epsilon": 1e-5,
             "swiglu": true, "add_bias_linear": false, "position_embedding_type": "rope", "rotary_base": 10000,
             "padded_vocab_size": 512, "max_position_embeddings": 128,
             "untie_embeddings_and_output_weights": true""";

    private BridgeFixtures() {}

    public static Path root() {
        return Path.of(System.getProperty("djlm.repo.root", ".")).resolve("../shared/fixtures")
                .toAbsolutePath().normalize();
    }

    public static Path hf(String model) {
        return root().resolve("hf").resolve(model);
    }

    public static Path megatron(String model) {
        return root().resolve("megatron").resolve(model);
    }

    /** Writes the Megatron arguments of {@code mcore_gpt} or {@code mcore_moe} to {@code file}. */
    public static Path mcoreConfig(String model, Path file) throws IOException {
        String extra = model.equals("mcore_moe")
                ? ", \"num_experts\": 4, \"moe_router_topk\": 2, \"moe_ffn_hidden_size\": 48}" : "}";
        return Files.writeString(file, MCORE_GPT_CONFIG + extra);
    }

    /** {@code golden.safetensors} of a fixture directory: input ids and logits. */
    public static long[] goldenIds(Path fixture) {
        try (SafetensorsReader g = SafetensorsReader.open(fixture.resolve("golden.safetensors"))) {
            return g.loadLongs("input_ids");
        }
    }

    public static float[] goldenLogits(Path fixture) {
        try (SafetensorsReader g = SafetensorsReader.open(fixture.resolve("golden.safetensors"))) {
            return g.loadFloats("logits");
        }
    }

    public static double maxAbsDiff(float[] a, float[] b) {
        if (a.length != b.length) {
            throw new AssertionError("lengths differ: " + a.length + " vs " + b.length);
        }
        double max = 0;
        for (int i = 0; i < a.length; i++) {
            max = Math.max(max, Math.abs(a[i] - b[i]));
        }
        return max;
    }
}
