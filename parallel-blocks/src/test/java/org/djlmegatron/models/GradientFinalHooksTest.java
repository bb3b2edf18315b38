package org.djlmegatron.models;

import static org.assertj.core.api.Assertions.assertThat;
import static org.djlmegatron.ParityHarness.onRanks;

import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.nn.Parameter;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.transformer.Recompute;
import org.djlmegatron.transformer.TransformerConfig;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The model reports, during backward, each parameter once as its gradient becomes final: later
 * layers before earlier ones, the (tied) embedding last; at that moment the gradient is the one
 * backward ends with. This is what overlapped gradient reduction starts its buckets from.
 */
class GradientFinalHooksTest {

    @ParameterizedTest(name = "tp={0}")
    @ValueSource(ints = {1, 2})
    void everyParameterIsReportedOnceWithItsFinalGradient(int tp) {
        TransformerConfig cfg = TransformerConfig.builder().numLayers(3).hiddenSize(32).numAttentionHeads(4)
                .numQueryGroups(4).ffnHiddenSize(64).vocabSize(64).maxPositionEmbeddings(16).build();
        onRanks(tp, ctx -> {
            GPTModel model = new GPTModel(ctx, cfg, tp > 1);
            model.initializeRandom(3, 0.02f);
            model.setRecompute(Recompute.full(Recompute.Method.UNIFORM, 1));
            Map<Object, float[]> atReport = new IdentityHashMap<>();
            Map<Object, Integer> batchOf = new IdentityHashMap<>();
            int[] batches = {0};
            ctx.tape().onGradientsFinal(done -> {
                for (Object p : done) {
                    assertThat(atReport).as("reported once").doesNotContainKey(p);
                    atReport.put(p, ((Parameter) p).getArray().getGradient().toFloatArray());
                    batchOf.put(p, batches[0]);
                }
                batches[0]++;
            });
            try (NDManager step = ctx.manager().newSubManager()) {
                ctx.tape().backward(model.causalLmLoss(step.arange(0, 32, 1, DataType.INT64).mod(64).reshape(2, 16)));
            }
            List<ShardedParameter> all = model.parameters();
            assertThat(atReport).hasSize(all.size());
            for (ShardedParameter sp : all) {
                assertThat(sp.parameter().getArray().getGradient().toFloatArray()).as(sp.name())
                        .containsExactly(atReport.get(sp.parameter()));
            }
            int layer0 = Integer.MAX_VALUE;
            int layer2 = -1;
            int embedding = -1;
            for (ShardedParameter sp : all) {
                int b = batchOf.get(sp.parameter());
                if (sp.name().startsWith("decoder.layers.0.")) {
                    layer0 = Math.min(layer0, b);
                } else if (sp.name().startsWith("decoder.layers.2.")) {
                    layer2 = Math.max(layer2, b);
                } else if (sp.name().startsWith("embedding.")) {
                    embedding = b;
                }
            }
            assertThat(layer2).as("layer 2 is final before layer 0").isLessThan(layer0);
            assertThat(embedding).as("the embedding is final in the last report").isEqualTo(batches[0] - 1);
            return null;
        });
    }
}
