package org.djlmegatron.bridge.convert;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.List;
import java.util.stream.Stream;
import org.djlmegatron.bridge.BridgeFixtures;
import org.djlmegatron.bridge.hf.HfConfig;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.nn.Norm;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.transformer.TransformerConfig;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/** The converters' parameter list must be exactly GPTModel's: names, full shapes, layouts, order. */
class ModelParamsTest {

    static Stream<TransformerConfig> configs() {
        Stream<TransformerConfig> fixtures = Stream.of(BridgeFixtures.HF_MODELS)
                .map(m -> HfConfig.read(BridgeFixtures.hf(m)).config());
        TransformerConfig biasedLayerNormGelu = TransformerConfig.builder().numLayers(3).hiddenSize(32)
                .numAttentionHeads(4).normalization(Norm.Kind.LAYER_NORM)
                .activation(TransformerConfig.Activation.GELU_TANH).addBiasLinear(true).addQkvBias(true)
                .positionEmbedding(TransformerConfig.PositionEmbedding.LEARNED_ABSOLUTE).tieEmbeddings(false).build();
        TransformerConfig sharedExperts = TransformerConfig.builder().numLayers(2).hiddenSize(32).numAttentionHeads(4)
                .numExperts(4).moeFfnHiddenSize(8).moeSharedExpertIntermediateSize(12).moeSharedExpertGate(true)
                .addQkvBias(true).build();
        return Stream.concat(fixtures, Stream.of(biasedLayerNormGelu, sharedExperts));
    }

    @ParameterizedTest
    @MethodSource("configs")
    void matchesGptModelParameters(TransformerConfig cfg) {
        List<String> model = LocalWorld.run(RankGrid.create(1, 1, 1, 1, 1), ctx -> new GPTModel(ctx, cfg, false)
                .parameters().stream().map(p -> p.name() + " " + p.fullShape() + " " + p.layout()).toList()).get(0);
        List<String> ours = ModelParams.of(cfg).stream()
                .map(p -> p.name() + " " + new ai.djl.ndarray.types.Shape(p.shape()) + " " + p.layout()).toList();
        assertThat(ours).containsExactlyElementsOf(model);
    }
}
