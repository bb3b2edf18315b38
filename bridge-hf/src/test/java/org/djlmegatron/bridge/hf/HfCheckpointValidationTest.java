package org.djlmegatron.bridge.hf;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.function.Consumer;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.transformer.TransformerConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** config.json parsing and its agreement with the weights: every failure names file and field. */
class HfCheckpointValidationTest {

    @TempDir
    Path tmp;

    /** A checkpoint dir with the fixture's weights and an edited copy of its config. */
    private Path edited(String model, Consumer<JsonObject> edit) throws IOException {
        Path src = Fixtures.hf(model);
        JsonObject cfg = JsonParser.parseString(Files.readString(src.resolve("config.json"))).getAsJsonObject();
        edit.accept(cfg);
        Path dir = Files.createDirectories(tmp.resolve(model + "-edited"));
        Files.writeString(dir.resolve("config.json"), cfg.toString());
        Files.copy(src.resolve("model.safetensors"), dir.resolve("model.safetensors"));
        return dir;
    }

    private static void load(Path dir) {
        try (HfCheckpoint ckpt = HfCheckpoint.open(dir)) {
            LocalWorld.run(RankGrid.single(), ctx -> {
                ckpt.loadInto(new GPTModel(ctx, ckpt.config(), false));
                return null;
            });
        }
    }

    @Test
    void readsEveryFixtureConfig() {
        TransformerConfig llama = HfConfig.read(Fixtures.hf("llama")).config();
        assertThat(llama.numQueryGroups()).isEqualTo(2);
        assertThat(llama.kvChannels()).isEqualTo(16);
        assertThat(llama.rotaryBase()).isEqualTo(10000.0);
        assertThat(llama.tieEmbeddings()).isFalse();
        assertThat(HfConfig.read(Fixtures.hf("qwen2")).config().addQkvBias()).isTrue();
        assertThat(HfConfig.read(Fixtures.hf("qwen2")).config().tieEmbeddings()).isTrue();
        assertThat(HfConfig.read(Fixtures.hf("qwen3")).config().qkLayernorm()).isTrue();
        TransformerConfig moe = HfConfig.read(Fixtures.hf("qwen3_moe")).config();
        assertThat(moe.numExperts()).isEqualTo(4);
        assertThat(moe.moeFfnHiddenSize()).isEqualTo(48);
        assertThat(moe.moeRenormalizeTopK()).isTrue();
        TransformerConfig gpt2 = HfConfig.read(Fixtures.hf("gpt2")).config();
        assertThat(gpt2.ffnHiddenSize()).isEqualTo(256);
        assertThat(gpt2.positionEmbedding()).isEqualTo(TransformerConfig.PositionEmbedding.LEARNED_ABSOLUTE);
    }

    @Test
    void ropeThetaAtTopLevelAndInRopeParameters() throws IOException {
        Path old = edited("llama", c -> {
            c.remove("rope_parameters");
            c.addProperty("rope_theta", 500000.0);
        });
        assertThat(HfConfig.read(old).config().rotaryBase()).isEqualTo(500000.0);
        Path v5 = edited("qwen3", c -> c.getAsJsonObject("rope_parameters").addProperty("rope_theta", 1e6));
        assertThat(HfConfig.read(v5).config().rotaryBase()).isEqualTo(1e6);
    }

    @Test
    void unknownModelType() throws IOException {
        Path dir = edited("llama", c -> c.addProperty("model_type", "bert"));
        assertThatThrownBy(() -> HfConfig.read(dir)).isInstanceOf(HfFormatException.class)
                .hasMessageContaining("config.json").hasMessageContaining("model_type \"bert\"")
                .hasMessageContaining("llama");
    }

    @Test
    void missingField() throws IOException {
        Path dir = edited("llama", c -> c.remove("hidden_size"));
        assertThatThrownBy(() -> HfConfig.read(dir)).hasMessageContaining("config.json")
                .hasMessageContaining("\"hidden_size\"");
    }

    @Test
    void invalidJson() throws IOException {
        Path dir = Files.createDirectories(tmp.resolve("bad"));
        Files.writeString(dir.resolve("config.json"), "{\"model_type\": ");
        assertThatThrownBy(() -> HfConfig.read(dir)).isInstanceOf(HfFormatException.class)
                .hasMessageContaining("config.json");
    }

    @Test
    void unsupportedRopeScaling() throws IOException {
        Path dir = edited("llama", c -> c.getAsJsonObject("rope_parameters").addProperty("rope_type", "yarn"));
        assertThatThrownBy(() -> HfConfig.read(dir)).hasMessageContaining("rope_parameters.rope_type")
                .hasMessageContaining("yarn");
    }

    @Test
    void intermediateSizeContradictsWeights() throws IOException {
        Path dir = edited("llama", c -> c.addProperty("intermediate_size", 128));
        assertThatThrownBy(() -> load(dir)).hasMessageContaining("model.safetensors")
                .hasMessageContaining("model.layers.0.mlp.gate_proj.weight")
                .hasMessageContaining("[160, 64]").hasMessageContaining("[128, 64]");
    }

    @Test
    void headCountContradictsWeights() throws IOException {
        Path dir = edited("qwen2", c -> c.addProperty("num_key_value_heads", 4));
        assertThatThrownBy(() -> load(dir)).hasMessageContaining("k_proj.weight")
                .hasMessageContaining("[32, 64]").hasMessageContaining("[64, 64]");
    }

    @Test
    void fewerLayersThanWeightsLeavesTensorsUnused() throws IOException {
        Path dir = edited("mixtral", c -> c.addProperty("num_hidden_layers", 1));
        assertThatThrownBy(() -> load(dir)).hasMessageContaining("model.layers.1.")
                .hasMessageContaining("not used");
    }

    @Test
    void moreLayersThanWeightsIsAMissingTensor() throws IOException {
        Path dir = edited("gpt2", c -> c.addProperty("n_layer", 3));
        assertThatThrownBy(() -> load(dir)).hasMessageContaining("transformer.h.2.")
                .hasMessageContaining("missing");
    }

    @Test
    void tiedConfigOnUntiedWeightsLeavesLmHeadUnused() throws IOException {
        Path dir = edited("llama", c -> c.addProperty("tie_word_embeddings", true));
        assertThatThrownBy(() -> load(dir)).hasMessageContaining("lm_head.weight").hasMessageContaining("not used");
    }

    @Test
    void tensorParallelSizeMustDivideKvHeadsBeforeAnyWork() {
        TransformerConfig llama = HfConfig.read(Fixtures.hf("llama")).config();
        assertThatThrownBy(() -> LocalWorld.run(RankGrid.create(4, 4, 1, 1, 1), ctx -> new GPTModel(ctx, llama, false)))
                .hasStackTraceContaining("tensor-parallel size 4 does not divide the 2 key/value heads");
    }
}
