package org.djlmegatron.transformer;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.djlmegatron.ParityHarness.maxAbsDiff;

import ai.djl.ndarray.NDManager;
import org.djlmegatron.ParityHarness.Tensor;
import org.junit.jupiter.api.Test;

/**
 * Rotary embedding against the formula in doubles: for position p and i < d/2, with
 * theta_i = base^(-2i/d), out[i] = x[i] cos(p theta_i) - x[i + d/2] sin(p theta_i) and
 * out[i + d/2] = x[i + d/2] cos(p theta_i) + x[i] sin(p theta_i) (rotate-half).
 */
class RotaryEmbeddingTest {

    private static final double TOLERANCE = 1e-5;

    /** The formula on {@code x [b, s, ..., d]}. */
    private static float[] expected(Tensor x, double base) {
        long[] shape = x.shape();
        int d = (int) shape[shape.length - 1];
        int seq = (int) shape[1];
        int perPosition = 1;
        for (int i = 2; i < shape.length - 1; i++) {
            perPosition *= (int) shape[i];
        }
        float[] in = x.data();
        float[] out = new float[in.length];
        for (int row = 0; row < in.length / d; row++) {
            int p = (row / perPosition) % seq;
            int o = row * d;
            for (int i = 0; i < d / 2; i++) {
                double angle = p * Math.pow(base, -2.0 * i / d);
                double a = in[o + i];
                double b = in[o + i + d / 2];
                out[o + i] = (float) (a * Math.cos(angle) - b * Math.sin(angle));
                out[o + i + d / 2] = (float) (b * Math.cos(angle) + a * Math.sin(angle));
            }
        }
        return out;
    }

    private static void check(RotaryEmbedding rope, NDManager m, Tensor x, double base) {
        float[] y = rope.apply(m, x.toNd(m)).toFloatArray();
        assertThat(maxAbsDiff(y, expected(x, base))).as("rope on %s, base %s", x, base)
                .isLessThanOrEqualTo(TOLERANCE);
    }

    @Test
    void matchesFormulaOnHeads() {
        try (NDManager m = NDManager.newBaseManager()) {
            check(new RotaryEmbedding(16, 10000), m, Tensor.random(1, 1.0, 2, 12, 3, 16), 10000);
            check(new RotaryEmbedding(8, 100), m, Tensor.random(2, 1.0, 2, 16, 2, 8), 100);
        }
    }

    /** Attention's grouped layout [b, s, groups, heads-per-group, d]; tables broadcast. */
    @Test
    void matchesFormulaOnGroupedHeads() {
        try (NDManager m = NDManager.newBaseManager()) {
            check(new RotaryEmbedding(8, 10000), m, Tensor.random(3, 1.0, 2, 10, 2, 3, 8), 10000);
        }
    }

    /** The cached tables follow the sequence length, up and down. */
    @Test
    void tablesFollowTheSequenceLength() {
        try (NDManager m = NDManager.newBaseManager()) {
            RotaryEmbedding rope = new RotaryEmbedding(16, 10000);
            for (int seq : new int[] {12, 5, 12, 16}) {
                check(rope, m, Tensor.random(seq, 1.0, 1, seq, 2, 16), 10000);
            }
        }
    }

    @Test
    void rejectsOddDimension() {
        assertThatThrownBy(() -> new RotaryEmbedding(7, 10000)).hasMessageContaining("even");
    }
}
