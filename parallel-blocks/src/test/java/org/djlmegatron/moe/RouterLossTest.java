package org.djlmegatron.moe;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.jni.JniUtils;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.transformer.TransformerConfig;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The router's load-balancing and z losses equal Megatron's formulas evaluated here by hand, in
 * doubles, from the same weights and tokens: aux_loss = E / (k T^2) sum_e (sum_t p_te) n_e,
 * seq_aux_loss = mean_b sum_e (n_be E / (s k)) mean_t p_bte, z = mean_t logsumexp(l_t)^2, with
 * p the softmax (or the sigmoid normalised over experts) and n the top-k counts.
 */
class RouterLossTest {

    static final int E = 6;
    static final int K = 2;
    static final int H = 8;
    static final int B = 2;
    static final int S = 6;

    /**
     * With {@code expertBias}, a bias of +-4 (far larger than the scores' spread) chooses the
     * experts; the load-balancing loss still counts the unbiased top k, as Megatron's
     * {@code compute_routing_scores_for_aux_loss}, which is what the doubles here count. With
     * {@code cp} = 2 each context-parallel rank routes half of every sequence: both report the whole
     * batch's load-balancing loss, and their z-losses average to the whole batch's.
     */
    @ParameterizedTest(name = "{0} {1} expert bias {2} cp {3}")
    @CsvSource({"SOFTMAX, AUX_LOSS, false, 1", "SOFTMAX, SEQ_AUX_LOSS, false, 1", "SIGMOID, AUX_LOSS, false, 1",
        "SIGMOID, SEQ_AUX_LOSS, false, 1", "SIGMOID, AUX_LOSS, true, 1", "SIGMOID, SEQ_AUX_LOSS, true, 1",
        "SOFTMAX, AUX_LOSS, false, 2", "SIGMOID, SEQ_AUX_LOSS, true, 2"})
    void lossesEqualTheFormulasInDoubles(MoeConfig.ScoreFunction score, MoeConfig.LoadBalancing balancing,
            boolean expertBias, int cp) {
        TransformerConfig cfg = TransformerConfig.builder().numLayers(1).hiddenSize(H).numAttentionHeads(2)
                .ffnHiddenSize(16).vocabSize(16).maxPositionEmbeddings(8).numExperts(E).moeRouterTopK(K)
                .addBiasLinear(false).build();
        Random rnd = new Random(3);
        float[] tokens = new float[B * S * H];
        for (int i = 0; i < tokens.length; i++) {
            tokens[i] = (float) rnd.nextGaussian();
        }
        List<double[]> got = LocalWorld.run(RankGrid.create(cp, 1, 1, cp, 1), ctx -> {
            TopKRouter router = new TopKRouter(ctx, cfg);
            router.initializeRandom(11, 0.5f);
            router.setConfig(new MoeConfig(score, balancing, 0.01, 0.001, MoeConfig.Dispatcher.ALLTOALL));
            if (expertBias) {
                router.enableExpertBias();
                router.updateExpertBias(new long[] {10, 0, 5, 5, 0, 10}, 4.0); // bias -4, 4, 0, 0, 4, -4
            }
            float[] w = router.parameters().get(0).parameter().getArray().toFloatArray();
            boolean grad = JniUtils.isGradMode();
            JniUtils.setGradMode(true);
            try (NDManager m = ctx.manager().newSubManager()) {
                int local = S / cp; // this rank's positions of every sequence
                int from = ctx.grid().cpRank(ctx.rank()) * local;
                float[] mine = new float[B * local * H];
                for (int b = 0; b < B; b++) {
                    System.arraycopy(tokens, (b * S + from) * H, mine, b * local * H, local * H);
                }
                NDArray x = m.create(mine, new Shape(B * local, H));
                TopKRouter.Routing r = router.route(x, B);
                ctx.tape().clear();
                double[] out = new double[2 + w.length];
                out[0] = r.auxLoss();
                out[1] = r.zLoss();
                for (int i = 0; i < w.length; i++) {
                    out[2 + i] = w[i];
                }
                return out;
            } finally {
                JniUtils.setGradMode(grad);
            }
        });
        double[] w = Arrays.copyOfRange(got.get(0), 2, 2 + E * H);
        double[][] logits = new double[B * S][E];
        for (int t = 0; t < B * S; t++) {
            for (int e = 0; e < E; e++) {
                for (int h = 0; h < H; h++) {
                    logits[t][e] += (double) tokens[t * H + h] * w[e * H + h];
                }
            }
        }
        double[][] p = new double[B * S][E];
        int[][] count = new int[B][E];
        double z = 0;
        for (int t = 0; t < B * S; t++) {
            double max = Arrays.stream(logits[t]).max().orElseThrow();
            double sumExp = 0;
            for (double l : logits[t]) {
                sumExp += Math.exp(l - max);
            }
            double lse = max + Math.log(sumExp);
            z += lse * lse / (B * S);
            double[] scores = new double[E];
            double sum = 0;
            for (int e = 0; e < E; e++) {
                scores[e] = score == MoeConfig.ScoreFunction.SOFTMAX ? Math.exp(logits[t][e] - lse)
                        : 1 / (1 + Math.exp(-logits[t][e]));
                sum += scores[e];
            }
            for (int e = 0; e < E; e++) {
                p[t][e] = score == MoeConfig.ScoreFunction.SOFTMAX ? scores[e] : scores[e] / sum;
            }
            Integer[] order = {0, 1, 2, 3, 4, 5};
            Arrays.sort(order, (a, b) -> Double.compare(scores[b], scores[a]));
            for (int j = 0; j < K; j++) {
                count[t / S][order[j]]++;
            }
        }
        double aux = 0;
        if (balancing == MoeConfig.LoadBalancing.AUX_LOSS) {
            for (int e = 0; e < E; e++) {
                double probSum = 0;
                for (int t = 0; t < B * S; t++) {
                    probSum += p[t][e];
                }
                aux += probSum * (count[0][e] + count[1][e]) * E / ((double) K * (B * S) * (B * S));
            }
        } else {
            for (int b = 0; b < B; b++) {
                for (int e = 0; e < E; e++) {
                    double mean = 0;
                    for (int s = 0; s < S; s++) {
                        mean += p[b * S + s][e] / S;
                    }
                    aux += count[b][e] * E / ((double) S * K) * mean / B;
                }
            }
        }
        double zMean = 0;
        for (double[] rank : got) {
            assertThat(rank[0]).as("load-balancing loss").isCloseTo(aux, org.assertj.core.data.Offset.offset(1e-6));
            zMean += rank[1] / got.size();
        }
        assertThat(zMean).as("z-loss").isCloseTo(z, org.assertj.core.data.Offset.offset(1e-5));
        assertThat(aux).as("the routing is unbalanced enough to matter").isGreaterThan(1.0);
    }

    /**
     * Aux-loss-free balancing: the bias (moved by Megatron's sign rule from hand-made counts)
     * changes which experts are chosen, while the weights stay the unbiased sigmoid scores of the
     * chosen experts, renormalised; all checked against doubles computed here.
     */
    @org.junit.jupiter.api.Test
    void expertBiasChoosesButDoesNotWeigh() {
        TransformerConfig cfg = TransformerConfig.builder().numLayers(1).hiddenSize(H).numAttentionHeads(2)
                .ffnHiddenSize(16).vocabSize(16).maxPositionEmbeddings(8).numExperts(E).moeRouterTopK(K)
                .addBiasLinear(false).build();
        Random rnd = new Random(5);
        float[] tokens = new float[S * H];
        for (int i = 0; i < tokens.length; i++) {
            tokens[i] = (float) rnd.nextGaussian();
        }
        // loads 10, 0, 5, 5, 5, 5 (mean 5): expert 0 down, expert 1 up, the rest unchanged; twice, rate 2
        long[] counts = {10, 0, 5, 5, 5, 5};
        List<Object[]> got = LocalWorld.run(RankGrid.single(), ctx -> {
            TopKRouter router = new TopKRouter(ctx, cfg);
            router.initializeRandom(13, 0.5f);
            router.setConfig(new MoeConfig(MoeConfig.ScoreFunction.SIGMOID, MoeConfig.LoadBalancing.NONE, 0, 0,
                    MoeConfig.Dispatcher.ALLTOALL));
            router.enableExpertBias();
            router.updateExpertBias(counts, 2.0);
            router.updateExpertBias(counts, 2.0);
            float[] w = router.parameters().get(0).parameter().getArray().toFloatArray();
            try (NDManager m = ctx.manager().newSubManager()) {
                TopKRouter.Routing r = router.route(m.create(tokens, new Shape(S, H)), 1);
                return new Object[] {w, r.experts().toLongArray(), r.weights().toFloatArray(), router.expertBias()};
            }
        });
        float[] w = (float[]) got.get(0)[0];
        long[] chosen = (long[]) got.get(0)[1];
        float[] weights = (float[]) got.get(0)[2];
        assertThat((float[]) got.get(0)[3]).containsExactly(-4f, 4f, 0f, 0f, 0f, 0f);
        double[] bias = {-4, 4, 0, 0, 0, 0};
        for (int t = 0; t < S; t++) {
            double[] score = new double[E];
            for (int e = 0; e < E; e++) {
                double l = 0;
                for (int h = 0; h < H; h++) {
                    l += (double) tokens[t * H + h] * w[e * H + h];
                }
                score[e] = 1 / (1 + Math.exp(-l));
            }
            Integer[] order = {0, 1, 2, 3, 4, 5};
            Arrays.sort(order, (a, b) -> Double.compare(score[b] + bias[b], score[a] + bias[a]));
            assertThat(chosen[t * K]).as("token %d's first expert: the biased favourite", t).isEqualTo(1L);
            assertThat(chosen[t * K + 1]).isEqualTo((long) order[1]);
            double sum = score[order[0]] + score[order[1]];
            assertThat((double) weights[t * K]).isCloseTo(score[order[0]] / sum, org.assertj.core.data.Offset.offset(1e-6));
            assertThat((double) weights[t * K + 1]).isCloseTo(score[order[1]] / sum, org.assertj.core.data.Offset.offset(1e-6));
        }
    }
}
