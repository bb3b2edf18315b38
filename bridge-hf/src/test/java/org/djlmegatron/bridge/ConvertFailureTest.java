package org.djlmegatron.bridge;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.djlmegatron.bridge.convert.ModelParams;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.bridge.convert.ParamSpec;
import org.djlmegatron.bridge.export.HfWeightSink;
import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.io.torch.TorchStorage;
import org.djlmegatron.io.torch.TorchTensor;
import org.djlmegatron.transformer.TransformerConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Conversions that must fail: each with an error that names the file and the problem, and with
 * nothing left in the output's directory (no output, no temporary).
 */
class ConvertFailureTest {

    @TempDir
    Path tmp;

    private Path out() {
        return tmp.resolve("out").resolve("converted");
    }

    private void convert(Path in, CheckpointFormat to, ParallelLayout layout, Path modelConfig, boolean overwrite) {
        CheckpointConverter.convert(new CheckpointConverter.Options(in, out(), to, null, layout, null, modelConfig,
                null, HfWeightSink.DEFAULT_MAX_SHARD, overwrite, null));
    }

    private void assertNothingLeft() throws IOException {
        Path parent = out().getParent();
        if (Files.exists(parent)) {
            try (Stream<Path> s = Files.list(parent)) {
                assertThat(s.toList()).as("left in " + parent).isEmpty();
            }
        }
    }

    @Test
    void pickleNamingOsSystemIsRefused() throws IOException {
        Path root = tmp.resolve("evil");
        Path file = HandMadeCheckpoints.rankFile(root, "mp_rank_00");
        HandMadeCheckpoints.writeRawPickle(file,
                "\u0080\u0002cos\nsystem\nX\u0005\u0000\u0000\u0000touch\u0085R.".getBytes(StandardCharsets.ISO_8859_1));
        Files.createDirectories(out().getParent());
        assertThatThrownBy(() -> convert(root, CheckpointFormat.HF, ParallelLayout.SINGLE, null, false))
                .hasMessageContaining(file.toString()).hasMessageContaining("'os.system'")
                .hasMessageContaining("not on the allow-list");
        assertNothingLeft();
    }

    @Test
    void truncatedArchiveIsRefused() throws IOException {
        Path root = tmp.resolve("cut");
        Path file = HandMadeCheckpoints.rankFile(root, "mp_rank_00");
        byte[] whole = Files.readAllBytes(BridgeFixtures.megatron("mcore_gpt")
                .resolve("torch/iter_0000001/mp_rank_00/model_optim_rng.pt"));
        Files.write(file, java.util.Arrays.copyOf(whole, whole.length - 1000));
        Files.createDirectories(out().getParent());
        assertThatThrownBy(() -> convert(root, CheckpointFormat.HF, ParallelLayout.SINGLE, null, false))
                .hasMessageContaining(file.toString()).hasMessageContaining("truncated");
        assertNothingLeft();
    }

    @Test
    void storageShorterThanTheViewFailsMidwayAndLeavesNothing() throws IOException {
        TransformerConfig cfg = TransformerConfig.builder().numLayers(1).hiddenSize(8).numAttentionHeads(2)
                .ffnHiddenSize(16).vocabSize(16).build();
        Path root = tmp.resolve("short");
        Path file = HandMadeCheckpoints.rankFile(root, "mp_rank_00");
        Map<Object, Object> model = new LinkedHashMap<>();
        List<TorchTensor> tensors = new ArrayList<>();
        Map<String, byte[]> storages = new HashMap<>();
        List<ParamSpec> specs = ModelParams.of(cfg);
        for (int i = 0; i < specs.size(); i++) {
            ParamSpec s = specs.get(i);
            String key = Integer.toString(i);
            TorchTensor t = TorchTensor.contiguous(key, SafetensorsDType.F32, s.shape());
            tensors.add(t);
            storages.put(key, new byte[(int) (4 * s.numel())]);
            boolean last = i == specs.size() - 1;
            // the output layer claims all its rows, but its storage holds 4 elements
            model.put(s.name(), last ? new TorchTensor(new TorchStorage(key, SafetensorsDType.F32, 4), 0,
                    s.shape(), t.stride()) : t);
        }
        Map<Object, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("checkpoint_version", 3.0);
        HandMadeCheckpoints.write(file, state, tensors, storages);
        Path config = Files.writeString(tmp.resolve("cfg.json"), "{\"num_layers\": 1, \"hidden_size\": 8, "
                + "\"num_attention_heads\": 2, \"ffn_hidden_size\": 16, \"padded_vocab_size\": 16, \"swiglu\": true, "
                + "\"normalization\": \"RMSNorm\", \"add_bias_linear\": false, \"position_embedding_type\": \"rope\", "
                + "\"untie_embeddings_and_output_weights\": true}");
        assertThatThrownBy(() -> convert(root, CheckpointFormat.MEGATRON, new ParallelLayout(1, 1, 1), config, false))
                .hasMessageContaining(file.toString()).hasMessageContaining("shorter");
        assertNothingLeft();
    }

    @Test
    void wrongShapesNameTheTensor() throws IOException {
        Path config = Files.writeString(tmp.resolve("cfg.json"),
                BridgeFixtures.MCORE_GPT_CONFIG.replace("\"ffn_hidden_size\": 160", "\"ffn_hidden_size\": 128") + "}");
        Files.createDirectories(out().getParent());
        assertThatThrownBy(() -> convert(BridgeFixtures.megatron("mcore_gpt").resolve("torch"), CheckpointFormat.HF,
                ParallelLayout.SINGLE, config, false))
                .hasMessageContaining("model_optim_rng.pt").hasMessageContaining("decoder.layers.0.mlp.linear_fc")
                .hasMessageContaining("expected [");
        assertThatThrownBy(() -> convert(BridgeFixtures.megatron("mcore_gpt").resolve("torch_dist"),
                CheckpointFormat.HF, ParallelLayout.SINGLE, config, false))
                .hasMessageContaining("decoder.layers.mlp.linear_fc").hasMessageContaining("expected [2, ");
        assertNothingLeft();
    }

    @Test
    void tensorParallelSizeThatDoesNotDivideTheHeads() throws IOException {
        Files.createDirectories(out().getParent());
        assertThatThrownBy(() -> convert(BridgeFixtures.hf("llama"), CheckpointFormat.MEGATRON,
                new ParallelLayout(4, 1, 1), null, false))
                .hasMessageContaining("tensor-parallel size 4 does not divide the 2 key/value heads");
        assertThatThrownBy(() -> convert(BridgeFixtures.hf("gpt2"), CheckpointFormat.DJL,
                new ParallelLayout(3, 1, 1), null, false))
                .hasMessageContaining("tensor-parallel size 3 does not divide the 4 attention heads");
        assertNothingLeft();
    }

    @Test
    void nonEmptyOutputNeedsOverwrite() throws IOException {
        Files.createDirectories(out());
        Files.writeString(out().resolve("precious.txt"), "keep me");
        assertThatThrownBy(() -> convert(BridgeFixtures.hf("qwen3"), CheckpointFormat.DJL, ParallelLayout.SINGLE,
                null, false)).hasMessageContaining("not empty").hasMessageContaining("--overwrite");
        assertThat(out().resolve("precious.txt")).exists();
        convert(BridgeFixtures.hf("qwen3"), CheckpointFormat.DJL, ParallelLayout.SINGLE, null, true);
        assertThat(out().resolve("precious.txt")).doesNotExist();
        assertThat(out().resolve("latest_checkpointed_iteration.txt")).hasContent("release");
        try (Stream<Path> s = Files.list(out().getParent())) {
            assertThat(s.toList()).containsExactly(out());
        }
    }

    @Test
    void megatronInputWithoutArgsNeedsAModelConfig() throws IOException {
        Files.createDirectories(out().getParent());
        assertThatThrownBy(() -> convert(BridgeFixtures.megatron("mcore_gpt").resolve("torch"), CheckpointFormat.HF,
                ParallelLayout.SINGLE, null, false)).hasMessageContaining("no 'args'")
                .hasMessageContaining("--model-config");
        assertNothingLeft();
    }
}
