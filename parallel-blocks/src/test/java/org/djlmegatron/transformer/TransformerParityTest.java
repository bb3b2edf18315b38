package org.djlmegatron.transformer;

import org.djlmegatron.models.TransformerLayer;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.djlmegatron.ParityHarness.assertParity;

import java.util.stream.Stream;
import org.djlmegatron.ParityHarness.BlockCase;
import org.djlmegatron.ParityHarness.Sharding;
import org.djlmegatron.moe.MoeLayer;
import org.djlmegatron.nn.Norm;
import org.djlmegatron.transformer.TransformerConfig.Activation;
import org.djlmegatron.transformer.TransformerConfig.PositionEmbedding;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Attention, MLP, MoE and the whole decoder layer at TP=2 (and TP=4 where the heads allow) against
 * TP=1: outputs, input gradients and every re-assembled parameter gradient.
 */
class TransformerParityTest {

    private static final long[] INPUT = {2, 8, 32};

    /** hidden 32, 4 heads of 8, ffn 64. */
    private static TransformerConfig.Builder small() {
        return TransformerConfig.builder().numLayers(1).hiddenSize(32).numAttentionHeads(4)
                .kvChannels(8).ffnHiddenSize(64).vocabSize(64).maxPositionEmbeddings(16);
    }

    /** TP sizes that divide the key/value heads. */
    private static int[] tpSizes(TransformerConfig cfg) {
        return cfg.numQueryGroups() % 4 == 0 ? new int[] {2, 4} : new int[] {2};
    }

    static Stream<Arguments> attentionConfigs() {
        return Stream.of(
                Arguments.of("MHA, rope", small().build()),
                Arguments.of("MHA, no rope", small().positionEmbedding(PositionEmbedding.LEARNED_ABSOLUTE).build()),
                Arguments.of("GQA, rope", small().numQueryGroups(2).build()),
                Arguments.of("GQA, qkv bias, proj bias", small().numQueryGroups(2).addQkvBias(true)
                        .addBiasLinear(true).build()),
                Arguments.of("MHA, q/k norm, qkv bias", small().qkLayernorm(true).addQkvBias(true).build()),
                Arguments.of("GQA, q/k norm, no rope", small().numQueryGroups(2).qkLayernorm(true)
                        .positionEmbedding(PositionEmbedding.LEARNED_ABSOLUTE).build()));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("attentionConfigs")
    void attention(String name, TransformerConfig cfg) {
        assertParity(BlockCase.replicated(ctx -> new Attention(ctx, cfg, false), INPUT), tpSizes(cfg));
    }

    static Stream<Arguments> mlpConfigs() {
        return Stream.of(
                Arguments.of(Activation.SWIGLU, false),
                Arguments.of(Activation.SWIGLU, true),
                Arguments.of(Activation.GELU_TANH, false),
                Arguments.of(Activation.GELU_TANH, true));
    }

    @ParameterizedTest(name = "{0} bias={1}")
    @MethodSource("mlpConfigs")
    void mlp(Activation activation, boolean bias) {
        TransformerConfig cfg = small().activation(activation).build();
        assertParity(BlockCase.replicated(ctx -> new Mlp(ctx, cfg, 64, bias, false), INPUT), 2, 4);
    }

    @ParameterizedTest(name = "top-2 of 4, renormalise={0}")
    @MethodSource("booleans")
    void moe(boolean renormalize) {
        TransformerConfig cfg = small().numExperts(4).moeRouterTopK(2).moeFfnHiddenSize(32)
                .moeRenormalizeTopK(renormalize).build();
        assertParity(BlockCase.replicated(ctx -> new MoeLayer(ctx, cfg, false), INPUT), 2, 4);
    }

    /** Expert biases are not supported (no GPT-family MoE uses them): refused, not ignored. */
    @Test
    void moeWithLinearBiasIsRefused() {
        assertThatThrownBy(() -> small().numExperts(4).moeRouterTopK(2).moeFfnHiddenSize(32)
                .addBiasLinear(true).build())
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("add_bias_linear");
    }

    static Stream<Boolean> booleans() {
        return Stream.of(false, true);
    }

    static Stream<Arguments> layerConfigs() {
        Stream.Builder<Arguments> out = Stream.builder();
        for (boolean sp : new boolean[] {false, true}) {
            out.add(Arguments.of("Llama-like (RMSNorm, SwiGLU, rope, MHA)", sp, small().build()));
            out.add(Arguments.of("GPT-2-like (LayerNorm, GELU, biases)", sp, small()
                    .normalization(Norm.Kind.LAYER_NORM).activation(Activation.GELU_TANH)
                    .positionEmbedding(PositionEmbedding.LEARNED_ABSOLUTE).addQkvBias(true)
                    .addBiasLinear(true).build()));
            out.add(Arguments.of("Qwen3-like (GQA, q/k norm)", sp, small().numQueryGroups(2)
                    .qkLayernorm(true).build()));
            out.add(Arguments.of("MoE (GQA, top-2 of 4)", sp, small().numQueryGroups(2).numExperts(4)
                    .moeFfnHiddenSize(32).build()));
        }
        return out.build();
    }

    @ParameterizedTest(name = "{0} sp={1}")
    @MethodSource("layerConfigs")
    void transformerLayer(String name, boolean sp, TransformerConfig cfg) {
        BlockCase c = BlockCase.replicated(ctx -> new TransformerLayer(ctx, cfg, sp), INPUT);
        if (sp) {
            c = c.withInput(Sharding.split(1)).withOutput(Sharding.split(1));
        }
        assertParity(c, tpSizes(cfg));
    }
}
