package org.djlmegatron.engine;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import java.util.Random;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** bfloat16 (which kills the JVM on DJL's stock JNI) computes what fp32 does, within bf16 rounding. */
@Tag("native")
class Bf16Test extends ArrayTestBase {

    /** Unit roundoff of bfloat16 (8 significant bits). */
    static final double U = Math.pow(2, -8);

    static float[] random(Random r, int n) {
        float[] out = new float[n];
        for (int i = 0; i < n; i++) {
            out[i] = (float) (2 * r.nextDouble() - 1);
        }
        return out;
    }

    @Test
    void matMulMatchesFp32WithinBf16Rounding() {
        int rows = 4;
        int inner = 16;
        int cols = 5;
        Random r = new Random(7);
        float[] a = random(r, rows * inner);
        float[] b = random(r, inner * cols);
        NDArray a32 = m.create(a, new Shape(rows, inner));
        NDArray b32 = m.create(b, new Shape(inner, cols));
        NDArray c16 = a32.toType(DataType.BFLOAT16, false).matMul(b32.toType(DataType.BFLOAT16, false));
        assertThat(c16.getDataType()).isEqualTo(DataType.BFLOAT16);
        float[] c = c16.toType(DataType.FLOAT32, false).toFloatArray();
        float[] c32 = a32.matMul(b32).toFloatArray();
        for (int i = 0; i < rows; i++) {
            for (int j = 0; j < cols; j++) {
                double exact = 0;
                double magnitude = 0;
                for (int k = 0; k < inner; k++) {
                    exact += (double) a[i * inner + k] * b[k * cols + j];
                    magnitude += Math.abs((double) a[i * inner + k] * b[k * cols + j]);
                }
                // inputs and output rounded to bf16 (an accumulation in bf16 would add up to inner * U)
                double bound = 3 * U * magnitude + U * Math.abs(exact);
                assertThat((double) c32[i * cols + j]).isCloseTo(exact, within(1e-5));
                assertThat((double) c[i * cols + j]).as("c[%d,%d]", i, j).isCloseTo(c32[i * cols + j], within(bound));
            }
        }
    }

    @Test
    void softmaxMatchesFp32WithinBf16Rounding() {
        float[] x = random(new Random(11), 3 * 8);
        for (int i = 0; i < x.length; i++) {
            x[i] *= 4;
        }
        NDArray x32 = m.create(x, new Shape(3, 8));
        float[] p32 = x32.softmax(1).toFloatArray();
        NDArray p16 = x32.toType(DataType.BFLOAT16, false).softmax(1);
        assertThat(p16.getDataType()).isEqualTo(DataType.BFLOAT16);
        float[] p = p16.toType(DataType.FLOAT32, false).toFloatArray();
        for (int i = 0; i < p.length; i++) {
            // logits rounded by U * |x| <= 4U shift each probability by at most ~8U of itself, plus output rounding
            assertThat(p[i]).isCloseTo(p32[i], within((float) (10 * U * p32[i] + 1e-6)));
        }
        float[] rowSums = p16.toType(DataType.FLOAT32, false).sum(new int[] {1}).toFloatArray();
        for (float s : rowSums) {
            assertThat(s).isCloseTo(1f, within((float) (8 * U)));
        }
    }

    @Test
    void gradientsFlowInBf16() {
        boolean previous = JniUtils.isGradMode();
        JniUtils.setGradMode(true);
        try {
            NDArray w = m.create(new float[] {1, -2, 0.5f, 3}).toType(DataType.BFLOAT16, false);
            w.setRequiresGradient(true);
            NDArray loss = w.mul(w).sum();
            JniUtils.backward((PtNDArray) loss, (PtNDArray) m.ones(new Shape(), DataType.BFLOAT16), false, false);
            NDArray grad = w.getGradient();
            assertThat(grad.getDataType()).isEqualTo(DataType.BFLOAT16);
            assertThat(grad.toType(DataType.FLOAT32, false).toFloatArray()).containsExactly(2, -4, 1, 6);
        } finally {
            JniUtils.setGradMode(previous);
        }
    }
}
