package org.djlmegatron.engine;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.ndarray.types.SparseFormat;
import ai.djl.nn.Activation;
import ai.djl.nn.convolutional.Conv1d;
import ai.djl.nn.core.Embedding;
import ai.djl.nn.core.Linear;
import ai.djl.nn.norm.BatchNorm;
import ai.djl.nn.norm.LayerNorm;
import ai.djl.nn.pooling.Pool;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** DJL's neural-network functions, FFT, statistics and linear algebra on the project's library. */
@Tag("native")
class NnFunctionsTest extends ArrayTestBase {

    @Test
    void layers() {
        NDArray x = m.create(new float[] {1, 2, 3, -1, 0, 1}, new Shape(2, 3));
        NDArray w = m.create(new float[] {1, 0, -1, 2, 1, 0}, new Shape(2, 3));
        NDArray b = m.create(new float[] {0.5f, -0.5f});
        assertThat(floats(Linear.linear(x, w, b).head())).containsExactly(-1.5f, 3.5f, -1.5f, -2.5f);

        NDArray table = m.create(new float[] {0, 1, 10, 11, 20, 21, 30, 31}, new Shape(4, 2));
        assertThat(floats(Embedding.embedding(m.create(new long[] {3, 0}), table, SparseFormat.DENSE).head()))
                .containsExactly(30, 31, 0, 1);

        float eps = 1e-5f;
        float[] norm = floats(LayerNorm.layerNorm(m.create(new float[] {1, 2, 3, 4}, new Shape(1, 4)), new Shape(4),
                        m.ones(new Shape(4)), m.zeros(new Shape(4)), eps)
                .head());
        for (int i = 0; i < 4; i++) {
            assertThat(norm[i]).isCloseTo((float) ((i + 1 - 2.5) / Math.sqrt(1.25 + eps)), within(1e-5f));
        }

        NDArray signal = m.create(new float[] {1, 2, 3, 4, 5}, new Shape(1, 1, 5));
        NDArray kernel = m.create(new float[] {1, -1}, new Shape(1, 1, 2));
        assertThat(floats(Conv1d.conv1d(signal, kernel, m.create(new float[] {0.5f})).head()))
                .containsExactly(-0.5f, -0.5f, -0.5f, -0.5f);
        assertThat(floats(Pool.maxPool1d(signal, new Shape(2), new Shape(2), new Shape(0), false))).containsExactly(2, 4);
        assertThat(floats(Pool.avgPool1d(signal, new Shape(2), new Shape(2), new Shape(0), false, true)))
                .containsExactly(1.5f, 3.5f);

        NDArray batch = m.create(new float[] {3, 5, -1, 8}, new Shape(2, 2));
        float[] bn = floats(BatchNorm.batchNorm(batch, m.create(new float[] {1, 2}), m.create(new float[] {4, 9}),
                        m.ones(new Shape(2)), m.zeros(new Shape(2)), 1, 0.1f, 0f, false)
                .head());
        assertThat(bn).containsExactly(new float[] {1, 1, -1, 2}, within(1e-6f));
    }

    @Test
    void activations() {
        float[] v = {-2, -0.5f, 0, 0.5f, 2};
        NDArray x = m.create(v);
        float[] relu = floats(Activation.relu(x));
        float[] softPlus = floats(Activation.softPlus(x));
        float[] leaky = floats(Activation.leakyRelu(x, 0.1f));
        float[] elu = floats(Activation.elu(x, 1f));
        float[] softSign = floats(Activation.softSign(x));
        float[] sigmoid = floats(Activation.sigmoid(x));
        float[] gelu = floats(Activation.gelu(x));
        for (int i = 0; i < v.length; i++) {
            assertThat(relu[i]).isEqualTo(Math.max(v[i], 0));
            assertThat(softPlus[i]).isCloseTo((float) Math.log1p(Math.exp(v[i])), within(1e-6f));
            assertThat(leaky[i]).isCloseTo(v[i] > 0 ? v[i] : 0.1f * v[i], within(1e-7f));
            assertThat(elu[i]).isCloseTo((float) (v[i] > 0 ? v[i] : Math.expm1(v[i])), within(1e-6f));
            assertThat(softSign[i]).isCloseTo(v[i] / (1 + Math.abs(v[i])), within(1e-7f));
            assertThat(sigmoid[i]).isCloseTo((float) (1 / (1 + Math.exp(-v[i]))), within(1e-6f));
        }
        assertThat(gelu[2]).isZero();
        assertThat(gelu[4]).isCloseTo(1.9545f, within(1e-4f)); // 2 * Phi(2)
    }

    @Test
    void fftStatisticsAndLinearAlgebra() {
        // DFT of [1, 2, 3, 4]: 10, -2+2i, -2, -2-2i (real, imaginary pairs)
        assertThat(floats(m.create(new float[] {1, 2, 3, 4}).fft(4).real())).containsExactly(10, 0, -2, 2, -2, 0, -2, -2);
        NDArray signal = m.arange(16f).sin();
        NDArray spectrum = signal.stft(4, 2, false, m.hanningWindow(4), true);
        assertThat(spectrum.getDataType()).isEqualTo(DataType.COMPLEX64);
        assertThat(spectrum.getShape()).isEqualTo(new Shape(3, 7)); // 4/2+1 bins, 1+(16-4)/2 frames
        assertThat(floats(m.hanningWindow(4))).containsExactly(new float[] {0, 0.5f, 1, 0.5f}, within(1e-6f));
        assertThat(floats(m.create(new float[] {3, 1, 2}).median())).containsExactly(2);
        assertThat(floats(m.create(new float[] {1, 2, 3, 4}).percentile(50))).containsExactly(2.5f);
        assertThat(floats(m.create(new float[] {3, 1, 3, 2}).unique().get(0))).containsExactly(1, 2, 3);
        assertThat(floats(m.create(new float[] {1, 4, 9, 16}).diff(1, 0))).containsExactly(3, 5, 7);
        assertThat(floats(m.create(new float[] {1, 2, 3}).cumProd(0))).containsExactly(1, 2, 6);
        assertThat(floats(m.create(new float[] {1, 2}).pad(new Shape(1, 1), 0))).containsExactly(0, 1, 2, 0);
        float[] inv = floats(m.create(new float[] {4, 7, 2, 6}, new Shape(2, 2)).inverse());
        float[] expected = {0.6f, -0.7f, -0.2f, 0.4f};
        for (int i = 0; i < 4; i++) {
            assertThat(inv[i]).isCloseTo(expected[i], within(1e-6f));
        }
        assertThat(floats(m.create(new float[] {0, 1}).erf())[1]).isCloseTo(0.8427008f, within(1e-6f));
        assertThat(floats(m.zeros(new Shape(4)).put(m.create(new long[] {1, 3}), m.create(new float[] {5, 6}))))
                .containsExactly(0, 5, 0, 6);
        assertThat(m.create(new float[] {0, 2, 0, 3}).nonzero().toLongArray()).containsExactly(1, 3);
        NDArray dense = m.create(new float[] {0, 2, 0, 3}, new Shape(2, 2));
        assertThat(floats(dense.toSparse(SparseFormat.COO).toDense())).containsExactly(0, 2, 0, 3);
        assertThat(floats(m.create(new float[] {1, 1}).atan2(m.create(new float[] {1, -1}))))
                .containsExactly((float) Math.atan2(1, 1), (float) Math.atan2(1, -1));
    }
}
