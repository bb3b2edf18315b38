package org.djlmegatron.models;

import static org.assertj.core.api.Assertions.assertThat;
import static org.djlmegatron.ParityHarness.TOLERANCE;
import static org.djlmegatron.ParityHarness.assertEveryGradientNonZero;
import static org.djlmegatron.ParityHarness.assertSameAsReference;
import static org.djlmegatron.ParityHarness.gradients;
import static org.djlmegatron.ParityHarness.installParameters;
import static org.djlmegatron.ParityHarness.onRanks;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.Shape;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;
import org.djlmegatron.ParityHarness.RankRun;
import org.djlmegatron.ParityHarness.Sharding;
import org.djlmegatron.ParityHarness.Tensor;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.transformer.TransformerConfig;
import org.djlmegatron.transformer.TransformerConfig.PositionEmbedding;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * A small GPT at TP=2 (and TP=4 where the key/value heads allow), with and without sequence
 * parallelism, against TP=1: the gathered logits, the causal-LM loss (last position ignored) and
 * every parameter gradient after {@link GPTModel#reducePartialGradients}.
 */
class GPTModelParityTest {

    /** Token ids spanning every quarter of the 64-token vocabulary. */
    private static final long[] IDS = {3, 17, 63, 0, 33, 48, 12, 29, 50, 7, 41, 62, 19, 26, 35, 58};

    static Stream<Arguments> models() {
        Stream.Builder<Arguments> out = Stream.builder();
        for (boolean moe : new boolean[] {false, true}) {
            for (PositionEmbedding pos : PositionEmbedding.values()) {
                for (boolean tied : new boolean[] {false, true}) {
                    TransformerConfig.Builder b = TransformerConfig.builder().numLayers(2).hiddenSize(32)
                            .numAttentionHeads(4).kvChannels(8).ffnHiddenSize(64).vocabSize(64)
                            .maxPositionEmbeddings(16).positionEmbedding(pos).tieEmbeddings(tied);
                    if (moe) {
                        b.numQueryGroups(2).numExperts(4).moeRouterTopK(2).moeFfnHiddenSize(32);
                    }
                    String name = (moe ? "MoE" : "dense") + ", " + pos + ", " + (tied ? "tied" : "untied");
                    for (boolean sp : new boolean[] {false, true}) {
                        out.add(Arguments.of(name, sp, b.build()));
                    }
                }
            }
        }
        return out.build();
    }

    @ParameterizedTest(name = "{0} sp={1}")
    @MethodSource("models")
    void matchesSingleRank(String name, boolean sp, TransformerConfig cfg) {
        RankRun reference = onRanks(1, ctx -> run(ctx, cfg, false)).get(0);
        assertEveryGradientNonZero(reference);
        int[] tps = cfg.numQueryGroups() % 4 == 0 ? new int[] {2, 4} : new int[] {2};
        for (int tp : tps) {
            List<RankRun> runs = onRanks(tp, ctx -> run(ctx, cfg, sp));
            for (RankRun r : runs) {
                assertThat(r.loss()).as("TP=%d loss on every rank", tp).isEqualTo(runs.get(0).loss());
            }
            assertThat(Math.abs((double) runs.get(0).loss() - reference.loss())).as("TP=%d loss", tp)
                    .isLessThanOrEqualTo(TOLERANCE);
            assertSameAsReference(reference, runs, Sharding.REPLICATED, Sharding.REPLICATED, "TP=" + tp);
        }
    }

    /** One rank: causal-LM loss, backward, partial gradients reduced; the gathered logits. */
    private static RankRun run(RankContext ctx, TransformerConfig cfg, boolean sp) {
        GPTModel gpt = new GPTModel(ctx, cfg, sp);
        assertThat(gpt.isSequenceParallel()).isEqualTo(sp && ctx.tensorGroup().size() > 1);
        installParameters(gpt);
        NDArray ids = ctx.manager().create(IDS, new Shape(2, 8));
        NDArray logits = gpt.apply(ids);
        NDArray loss = gpt.lossFromLogits(logits, GPTModel.shiftLabels(ids));
        ctx.tape().backward(loss);
        gpt.reducePartialGradients();
        return new RankRun(Tensor.of(gpt.gatherLogits(logits)), null, gradients(gpt), loss.getFloat());
    }

    /** TP=4 cannot split 2 key/value heads: the model says so before building any layer. */
    @Test
    void rejectsTpThatDoesNotDivideKvHeadsBeforeBuildingLayers() {
        TransformerConfig cfg = TransformerConfig.builder().numLayers(2).hiddenSize(64)
                .numAttentionHeads(8).numQueryGroups(2).vocabSize(64).build();
        List<IllegalArgumentException> errors = onRanks(4, ctx -> {
            try {
                new GPTModel(ctx, cfg, false);
                return null;
            } catch (IllegalArgumentException e) {
                return e;
            }
        });
        for (IllegalArgumentException e : errors) {
            assertThat(e).as("GPTModel construction at TP=4 with 2 KV heads must fail").isNotNull();
            assertThat(e.getMessage())
                    .contains("key/value heads")
                    .contains("num_key_value_heads")
                    .contains("2")
                    .contains("4");
            // thrown by the up-front validation, not from inside a layer or a parameter registration
            assertThat(Arrays.stream(e.getStackTrace()).map(StackTraceElement::getClassName))
                    .doesNotContain("org.djlmegatron.transformer.Attention",
                            "org.djlmegatron.models.TransformerLayer",
                            "org.djlmegatron.nn.ColumnParallelLinear",
                            "org.djlmegatron.nn.VocabParallelEmbedding")
                    .contains("org.djlmegatron.models.GPTModel");
            assertThat(Arrays.stream(e.getStackTrace()).map(StackTraceElement::getMethodName))
                    .doesNotContain("param", "part");
        }
    }
}
