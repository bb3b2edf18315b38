package org.djlmegatron.models;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.util.List;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.transformer.TransformerConfig;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The same forward and backward, repeated many times, gives bit-identical loss and gradients.
 * Guards against tensors the graph keeps but Java frees (DJL's mul(Number) scalars gave random
 * Inf/NaN gradients after a few dozen passes; see autograd.Scalar).
 */
class RepeatedBackwardTest {

    @ParameterizedTest(name = "tp={0}")
    @ValueSource(ints = {1, 2})
    void repeatedPassesAreBitIdentical(int tp) {
        TransformerConfig cfg = TransformerConfig.builder().numLayers(2).hiddenSize(64).numAttentionHeads(4)
                .numQueryGroups(2).ffnHiddenSize(128).vocabSize(256).maxPositionEmbeddings(32)
                .addQkvBias(true).tieEmbeddings(true).build();
        long[] ids = new long[2 * 16];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = (i * 37L) % 256;
        }
        List<float[]> runs = LocalWorld.run(RankGrid.create(tp, tp, 1, 1, 1), ctx -> {
            GPTModel gpt = new GPTModel(ctx, cfg, false);
            gpt.initializeRandom(7, 0.02f);
            float[] out = new float[120];
            for (int it = 0; it < out.length; it++) {
                try (NDManager step = ctx.manager().newSubManager()) {
                    NDArray loss = gpt.causalLmLoss(step.create(ids, new Shape(2, 16)));
                    ctx.tape().backward(loss);
                    gpt.reducePartialGradients();
                    float sumSq = 0;
                    for (ShardedParameter p : gpt.parameters()) {
                        try (NDArray g = p.parameter().getArray().getGradient()) {
                            sumSq += g.square().sum().getFloat();
                        }
                    }
                    out[it] = loss.getFloat() + sumSq;
                    gpt.zeroGradients();
                }
            }
            return out;
        });
        float[] first = runs.get(0);
        assertThat(Float.isFinite(first[0])).isTrue();
        for (int it = 1; it < first.length; it++) {
            assertThat(first[it]).as("pass %d", it).isEqualTo(first[0]);
        }
    }
}
