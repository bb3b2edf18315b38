package org.djlmegatron.bridge.megatron;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import org.djlmegatron.bridge.BridgeFixtures;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.bridge.hf.HfConfig;
import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.transformer.TransformerConfig;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.MethodSource;

/** Megatron argument names to and from the model config, and the options that are refused. */
class MegatronConfigTest {

    static String[] models() {
        return BridgeFixtures.HF_MODELS;
    }

    @ParameterizedTest
    @MethodSource("models")
    void argsAndJsonRoundTrip(String model) {
        TransformerConfig c = HfConfig.read(BridgeFixtures.hf(model)).config();
        assertThat(MegatronConfig.fromArgs(MegatronConfig.toArgs(c, ParallelLayout.SINGLE, SafetensorsDType.F32), "t"))
                .isEqualTo(c);
        assertThat(MegatronConfig.fromJson(MegatronConfig.toJson(c), "t")).isEqualTo(c);
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
        "\"rotary_percent\": 0.5 | rotary_percent = 0.5",
        "\"moe_router_score_function\": \"sigmoid\" | moe_router_score_function = sigmoid",
        "\"swiglu\": false | exact GELU",
        "\"use_rope_scaling\": true | use_rope_scaling = true",
        "\"position_embedding_type\": \"none\" | position_embedding_type = none",
        "\"num_layers\": 2.5 | non-negative integer"})
    void refusesWhatTheModelCannotDo(String field, String message) {
        JsonObject json = JsonParser.parseString(BridgeFixtures.MCORE_GPT_CONFIG + ", " + field + "}").getAsJsonObject();
        assertThatThrownBy(() -> MegatronConfig.fromJson(json, "cfg.json")).hasMessageContaining("cfg.json")
                .hasMessageContaining(message);
    }
}
