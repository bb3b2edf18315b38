package org.djlmegatron.moe;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.jni.JniUtils;
import java.util.List;
import java.util.Random;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.transformer.TransformerConfig;
import org.junit.jupiter.api.Test;

/**
 * {@code --moe-shared-expert-overlap} at EP=2: the dispatch runs on the communication thread
 * (counted) and the layer's output and every parameter's gradient are bit-identical to the
 * sequential layer's.
 */
class SharedExpertOverlapTest {

    static final int H = 8;
    static final int T = 6;

    @Test
    void overlappedDispatchGivesTheSameOutputAndGradients() {
        TransformerConfig cfg = TransformerConfig.builder().numLayers(1).hiddenSize(H).numAttentionHeads(2)
                .ffnHiddenSize(16).vocabSize(16).maxPositionEmbeddings(8).numExperts(4).moeRouterTopK(2)
                .moeFfnHiddenSize(6).moeSharedExpertIntermediateSize(5).moeSharedExpertGate(true)
                .addBiasLinear(false).build();
        List<float[][]> runs = LocalWorld.run(RankGrid.create(2, 1, 1, 1, 2), ctx -> {
            Random rnd = new Random(5 + ctx.rank()); // each EP rank routes its own tokens
            float[] tokens = new float[T * H];
            for (int i = 0; i < tokens.length; i++) {
                tokens[i] = (float) rnd.nextGaussian();
            }
            float[][] out = new float[2][];
            for (int overlap = 0; overlap < 2; overlap++) {
                MoeLayer moe = new MoeLayer(ctx, cfg, false);
                moe.initializeRandom(21, 0.5f);
                moe.setConfig(new MoeConfig(MoeConfig.ScoreFunction.SOFTMAX, MoeConfig.LoadBalancing.NONE, 0, 0,
                        MoeConfig.Dispatcher.ALLTOALL, null, ExpertCapacity.DropPolicy.PROBS, false, false,
                        overlap == 1));
                boolean grad = JniUtils.isGradMode();
                JniUtils.setGradMode(true);
                try (NDManager m = ctx.manager().newSubManager()) {
                    NDArray x = m.create(tokens, new Shape(1, T, H));
                    NDArray y = moe.apply(x);
                    ctx.tape().backward(y.sum());
                    float[] values = y.toFloatArray();
                    List<float[]> all = new java.util.ArrayList<>();
                    all.add(values);
                    moe.parameters().forEach(p -> all.add(p.parameter().getArray().getGradient().toFloatArray()));
                    out[overlap] = flatten(all);
                    assertThat(moe.stats().overlappedDispatches()).as("overlapped dispatches").isEqualTo(overlap);
                } finally {
                    JniUtils.setGradMode(grad);
                    ctx.tape().clear();
                }
            }
            return out;
        });
        for (int rank = 0; rank < 2; rank++) {
            assertThat(runs.get(rank)[1]).as("rank %d: output and gradients", rank).containsExactly(runs.get(rank)[0]);
        }
    }

    private static float[] flatten(List<float[]> parts) {
        int n = parts.stream().mapToInt(a -> a.length).sum();
        float[] out = new float[n];
        int at = 0;
        for (float[] a : parts) {
            System.arraycopy(a, 0, out, at, a.length);
            at += a.length;
        }
        return out;
    }
}
