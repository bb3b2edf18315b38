package org.djlmegatron.bridge.megatron;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import org.djlmegatron.bridge.BridgeFixtures;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.bridge.hf.HfConfig;
import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.transformer.RopeScaling;
import org.djlmegatron.transformer.TransformerConfig;
import org.junit.jupiter.api.Test;
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

    @Test
    void ropeScalingTravelsAsMegatronArguments() {
        TransformerConfig llama = HfConfig.read(BridgeFixtures.hf("llama")).config();
        for (RopeScaling s : new RopeScaling[] {RopeScaling.megatronLlama3(32), RopeScaling.linear(4)}) {
            TransformerConfig c = withScaling(llama, s);
            assertThat(MegatronConfig.fromArgs(MegatronConfig.toArgs(c, ParallelLayout.SINGLE, SafetensorsDType.F32),
                    "t")).isEqualTo(c);
            assertThat(MegatronConfig.fromJson(MegatronConfig.toJson(c), "t")).isEqualTo(c);
        }
        JsonObject args = MegatronConfig.toJson(withScaling(llama, RopeScaling.megatronLlama3(32)));
        assertThat(args.get("use_rope_scaling").getAsBoolean()).isTrue();
        assertThat(args.get("rope_scaling_factor").getAsDouble()).isEqualTo(32.0);
        JsonObject megatronArgs = JsonParser.parseString(BridgeFixtures.MCORE_GPT_CONFIG
                + ", \"use_rope_scaling\": true}").getAsJsonObject();
        assertThat(MegatronConfig.fromJson(megatronArgs, "t").ropeScaling()).isEqualTo(RopeScaling.llama3(8, 1, 4, 8192));
        TransformerConfig odd = withScaling(llama, RopeScaling.llama3(8, 1, 4, 64));
        assertThat(MegatronConfig.fromJson(MegatronConfig.toJson(odd), "t")).isEqualTo(odd); // our own checkpoints
        assertThatThrownBy(() -> MegatronConfig.toArgs(odd, ParallelLayout.SINGLE, SafetensorsDType.F32))
                .hasMessageContaining("cannot be written as Megatron arguments");
        assertThatThrownBy(() -> MegatronConfig.toArgs(withScaling(llama, RopeScaling.linear(2.5)),
                ParallelLayout.SINGLE, SafetensorsDType.F32)).hasMessageContaining("integer");
    }

    private static TransformerConfig withScaling(TransformerConfig c, RopeScaling s) {
        return new TransformerConfig(c.numLayers(), c.hiddenSize(), c.numAttentionHeads(), c.numQueryGroups(),
                c.kvChannels(), c.ffnHiddenSize(), c.vocabSize(), c.maxPositionEmbeddings(), c.normalization(),
                c.normEpsilon(), c.activation(), c.positionEmbedding(), c.rotaryBase(), c.addQkvBias(),
                c.addBiasLinear(), c.qkLayernorm(), c.tieEmbeddings(), c.numExperts(), c.moeRouterTopK(),
                c.moeFfnHiddenSize(), c.moeRenormalizeTopK(), s,
                c.moeSharedExpertIntermediateSize(), c.moeSharedExpertGate());
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
        "\"rotary_percent\": 0.5 | rotary_percent = 0.5",
        "\"moe_router_score_function\": \"sigmoid\" | moe_router_score_function = sigmoid",
        "\"swiglu\": false | exact GELU",
        "\"use_rope_scaling\": true, \"rotary_seq_len_interpolation_factor\": 2 | both set",
        "\"position_embedding_type\": \"none\" | position_embedding_type = none",
        "\"num_layers\": 2.5 | non-negative integer"})
    void refusesWhatTheModelCannotDo(String field, String message) {
        JsonObject json = JsonParser.parseString(BridgeFixtures.MCORE_GPT_CONFIG + ", " + field + "}").getAsJsonObject();
        assertThatThrownBy(() -> MegatronConfig.fromJson(json, "cfg.json")).hasMessageContaining("cfg.json")
                .hasMessageContaining(message);
    }
}
