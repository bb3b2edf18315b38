package org.djlmegatron.nn;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.Shape;
import org.djlmegatron.autograd.RandomKey;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The counter-based masks: their rate, their scale, and that a rank's part equals the whole's part. */
class PositionalDropoutTest {

    private static final RandomKey KEY = new RandomKey(3, 40);

    @ParameterizedTest
    @ValueSource(doubles = {0.1, 0.5, 0.9})
    void dropRateIsWithinThreeSigmaAndKeptValuesAreScaled(double p) {
        try (NDManager m = NDManager.newBaseManager()) {
            int b = 4;
            int s = 128;
            int h = 256;
            NDArray ones = m.ones(new Shape(b, s, h));
            float[] y = new PositionalDropout(p, 99).hidden(ones, KEY, 2, PositionalDropout.Site.MLP_OUTPUT, 0)
                    .toFloatArray();
            long dropped = 0;
            float keep = (float) (1.0 / (1.0 - p));
            for (float v : y) {
                if (v == 0f) {
                    dropped++;
                } else {
                    assertThat(v).isEqualTo(keep);
                }
            }
            double n = y.length;
            double sigma = Math.sqrt(n * p * (1 - p));
            assertThat(Math.abs(dropped - n * p)).as("dropped %d of %d at p=%s", dropped, y.length, p)
                    .isLessThanOrEqualTo(3 * sigma);
        }
    }

    @Test
    void aSequenceSliceGetsTheWholeMasksSlice() {
        try (NDManager m = NDManager.newBaseManager()) {
            PositionalDropout d = new PositionalDropout(0.3, 7);
            NDArray x = m.randomNormal(new Shape(2, 8, 6));
            NDArray whole = d.hidden(x, KEY, 1, PositionalDropout.Site.ATTENTION_OUTPUT, 0);
            NDArray second = d.hidden(x.get(new NDIndex(":, 4:8, :")), KEY, 1, PositionalDropout.Site.ATTENTION_OUTPUT, 4);
            assertThat(second.toFloatArray()).containsExactly(whole.get(new NDIndex(":, 4:8, :")).toFloatArray());
        }
    }

    @Test
    void aHeadSliceGetsTheWholeMasksSlice() {
        try (NDManager m = NDManager.newBaseManager()) {
            PositionalDropout d = new PositionalDropout(0.2, 7);
            NDArray probs = m.randomUniform(0, 1, new Shape(2, 4, 2, 5, 5)); // [b, groups, heads per group, sq, sk]
            NDArray whole = d.probabilities(probs, KEY, 0, 0);
            NDArray upper = d.probabilities(probs.get(new NDIndex(":, 2:4")), KEY, 0, 4);
            assertThat(upper.toFloatArray()).containsExactly(whole.get(new NDIndex(":, 2:4")).toFloatArray());
        }
    }

    @Test
    void masksDifferBetweenSitesLayersSamplesAndIterations() {
        try (NDManager m = NDManager.newBaseManager()) {
            PositionalDropout d = new PositionalDropout(0.5, 7);
            NDArray x = m.ones(new Shape(1, 16, 16));
            float[] base = d.hidden(x, KEY, 0, PositionalDropout.Site.MLP_OUTPUT, 0).toFloatArray();
            assertThat(d.hidden(x, KEY, 0, PositionalDropout.Site.ATTENTION_OUTPUT, 0).toFloatArray()).isNotEqualTo(base);
            assertThat(d.hidden(x, KEY, 1, PositionalDropout.Site.MLP_OUTPUT, 0).toFloatArray()).isNotEqualTo(base);
            assertThat(d.hidden(x, new RandomKey(3, 41), 0, PositionalDropout.Site.MLP_OUTPUT, 0).toFloatArray())
                    .isNotEqualTo(base);
            assertThat(d.hidden(x, new RandomKey(4, 40), 0, PositionalDropout.Site.MLP_OUTPUT, 0).toFloatArray())
                    .isNotEqualTo(base);
            assertThat(new PositionalDropout(0.5, 8).hidden(x, KEY, 0, PositionalDropout.Site.MLP_OUTPUT, 0)
                    .toFloatArray()).isNotEqualTo(base);
        }
    }

    @Test
    void offWithoutAKeyOrAtZero() {
        try (NDManager m = NDManager.newBaseManager()) {
            NDArray x = m.ones(new Shape(1, 4, 4));
            assertThat(new PositionalDropout(0.5, 1).hidden(x, null, 0, PositionalDropout.Site.EMBEDDING, 0)).isSameAs(x);
            assertThat(new PositionalDropout(0, 1).hidden(x, KEY, 0, PositionalDropout.Site.EMBEDDING, 0)).isSameAs(x);
        }
    }

    @ParameterizedTest
    @ValueSource(doubles = {-0.01, 1.0, 2.0, Double.NaN})
    void probabilitiesOutsideZeroOneAreRefused(double p) {
        assertThatThrownBy(() -> new PositionalDropout(p, 1)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("[0, 1)");
    }
}
