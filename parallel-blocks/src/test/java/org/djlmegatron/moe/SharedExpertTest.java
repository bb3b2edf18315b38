package org.djlmegatron.moe;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.assertj.core.data.Offset;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.transformer.TransformerConfig;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * An MoE layer with shared experts, as Qwen2-MoE's {@code Qwen2MoeSparseMoeBlock} computes it,
 * evaluated here by hand in doubles from the layer's own weights: softmax router, top-k,
 * renormalised weights, each chosen expert's SwiGLU MLP, plus the shared expert's SwiGLU MLP
 * scaled by sigmoid(x . shared_expert_gate) (or unscaled, Megatron's ungated shared experts).
 */
class SharedExpertTest {

    static final int E = 4;
    static final int K = 2;
    static final int H = 8;
    static final int FFN = 6;
    static final int SHARED = 5;
    static final int T = 6;

    @ParameterizedTest(name = "gate {0}")
    @ValueSource(booleans = {true, false})
    void outputEqualsTheQwen2MoeBlockInDoubles(boolean gate) {
        TransformerConfig cfg = TransformerConfig.builder().numLayers(1).hiddenSize(H).numAttentionHeads(2)
                .ffnHiddenSize(16).vocabSize(16).maxPositionEmbeddings(8).numExperts(E).moeRouterTopK(K)
                .moeFfnHiddenSize(FFN).moeSharedExpertIntermediateSize(SHARED).moeSharedExpertGate(gate)
                .addBiasLinear(false).build();
        Random rnd = new Random(7);
        float[] tokens = new float[T * H];
        for (int i = 0; i < tokens.length; i++) {
            tokens[i] = (float) rnd.nextGaussian();
        }
        List<Map<String, float[]>> got = LocalWorld.run(RankGrid.single(), ctx -> {
            MoeLayer moe = new MoeLayer(ctx, cfg, false);
            moe.initializeRandom(21, 0.5f);
            Map<String, float[]> out = new HashMap<>();
            for (ShardedParameter p : moe.parameters()) {
                out.put(p.name(), p.parameter().getArray().toFloatArray());
            }
            try (NDManager m = ctx.manager().newSubManager()) {
                NDArray y = moe.apply(m.create(tokens, new Shape(1, T, H)));
                out.put("output", y.toFloatArray());
            }
            ctx.tape().clear();
            return out;
        });
        Map<String, float[]> w = got.get(0);
        assertThat(w.containsKey("shared_experts.gate_weight")).isEqualTo(gate);
        float[] y = w.get("output");
        for (int t = 0; t < T; t++) {
            double[] x = new double[H];
            for (int h = 0; h < H; h++) {
                x[h] = tokens[t * H + h];
            }
            double[] logits = matVec(w.get("router.weight"), x, E);
            double max = Arrays.stream(logits).max().orElseThrow();
            double[] p = new double[E];
            double sum = 0;
            for (int e = 0; e < E; e++) {
                p[e] = Math.exp(logits[e] - max);
                sum += p[e];
            }
            Integer[] order = {0, 1, 2, 3};
            Arrays.sort(order, (a, b) -> Double.compare(p[b], p[a]));
            double topSum = p[order[0]] + p[order[1]];
            double[] expected = new double[H];
            for (int j = 0; j < K; j++) {
                String base = "experts.local_experts." + order[j] + ".";
                add(expected, swiglu(w.get(base + "linear_fc1.weight"), w.get(base + "linear_fc2.weight"), x, FFN),
                        p[order[j]] / topSum);
            }
            double scale = 1;
            if (gate) {
                scale = 1 / (1 + Math.exp(-matVec(w.get("shared_experts.gate_weight"), x, 1)[0]));
            }
            add(expected, swiglu(w.get("shared_experts.linear_fc1.weight"), w.get("shared_experts.linear_fc2.weight"),
                    x, SHARED), scale);
            for (int h = 0; h < H; h++) {
                assertThat((double) y[t * H + h]).as("token %d, feature %d", t, h)
                        .isCloseTo(expected[h], Offset.offset(1e-5));
            }
        }
    }

    /** down(silu(gate x) * (up x)) with fc1 = [gate; up] ({@code [2 ffn, H]}) and fc2 {@code [H, ffn]}. */
    private static double[] swiglu(float[] fc1, float[] fc2, double[] x, int ffn) {
        double[] gu = matVec(fc1, x, 2 * ffn);
        double[] a = new double[ffn];
        for (int i = 0; i < ffn; i++) {
            double g = gu[i];
            a[i] = g / (1 + Math.exp(-g)) * gu[ffn + i];
        }
        return matVec(fc2, a, H);
    }

    private static double[] matVec(float[] m, double[] v, int rows) {
        double[] out = new double[rows];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < v.length; c++) {
                out[r] += m[r * v.length + c] * v[c];
            }
        }
        return out;
    }

    private static void add(double[] acc, double[] v, double scale) {
        for (int i = 0; i < acc.length; i++) {
            acc[i] += scale * v[i];
        }
    }
}
