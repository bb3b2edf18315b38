package org.djlmegatron.engine;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.engine.EngineException;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import java.util.Random;
import org.djlmegatron.autograd.Scalar;
import org.djlmegatron.optim.FlatAdamW;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** The project's natives: attention, AdamW, differentiable cast, data pointers, CUDA queries on a CPU build. */
@Tag("native")
class TorchNativeTest extends GradModeTestBase {


    NDArray random(Random r, Shape shape) {
        float[] v = new float[(int) shape.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) r.nextGaussian();
        }
        return m.create(v, shape);
    }

    static NDArray leaf(NDArray x) {
        NDArray copy = x.duplicate();
        copy.setRequiresGradient(true);
        return copy;
    }

    static double maxAbsDiff(NDArray a, NDArray b) {
        float[] x = a.toType(DataType.FLOAT32, false).toFloatArray();
        float[] y = b.toType(DataType.FLOAT32, false).toFloatArray();
        assertThat(x).hasSameSizeAs(y);
        double max = 0;
        for (int i = 0; i < x.length; i++) {
            max = Math.max(max, Math.abs(x[i] - y[i]));
        }
        return max;
    }

    /** softmax(q k^T * scale + mask) v from DJL operations, key/value heads repeated for grouped queries. */
    NDArray composedAttention(NDArray q, NDArray k, NDArray v, boolean causal, double scale) {
        long group = q.getShape().get(1) / k.getShape().get(1);
        NDArray scores = q.matMul(k.repeat(1, group).transpose(0, 1, 3, 2)).mul(Scalar.of(m, scale));
        if (causal) {
            int s = (int) q.getShape().get(2);
            float[] mask = new float[s * s];
            for (int i = 0; i < s; i++) {
                for (int j = i + 1; j < s; j++) {
                    mask[i * s + j] = Float.NEGATIVE_INFINITY;
                }
            }
            scores = scores.add(m.create(mask, new Shape(s, s)));
        }
        return scores.softmax(-1).matMul(v.repeat(1, group));
    }

    /** Sequences past 128 run the native causal attention in blocks of 128 queries (300: 128, 128, 44). */
    @ParameterizedTest(name = "causal={0} queryHeads={1} kvHeads={2} seq={3}")
    @CsvSource({"false, 4, 4, 6", "true, 4, 4, 6", "false, 4, 2, 6", "true, 4, 2, 6", "true, 4, 4, 300",
        "true, 4, 2, 256", "false, 4, 4, 300"})
    void sdpaMatchesComposedAttentionInValuesAndGradients(boolean causal, int queryHeads, int kvHeads, int seq) {
        Random r = new Random(3);
        int batch = 2;
        int dim = 8;
        double scale = 1 / Math.sqrt(dim);
        NDArray q = random(r, new Shape(batch, queryHeads, seq, dim));
        NDArray k = random(r, new Shape(batch, kvHeads, seq, dim));
        NDArray v = random(r, new Shape(batch, kvHeads, seq, dim));
        NDArray upstream = random(r, new Shape(batch, queryHeads, seq, dim));

        NDArray q1 = leaf(q);
        NDArray k1 = leaf(k);
        NDArray v1 = leaf(v);
        NDArray fused = TorchNative.scaledDotProductAttention(q1, k1, v1, causal, scale);
        JniUtils.backward((PtNDArray) fused, (PtNDArray) upstream, false, false);

        NDArray q2 = leaf(q);
        NDArray k2 = leaf(k);
        NDArray v2 = leaf(v);
        NDArray composed = composedAttention(q2, k2, v2, causal, scale);
        JniUtils.backward((PtNDArray) composed, (PtNDArray) upstream, false, false);

        assertThat(fused.getShape()).isEqualTo(new Shape(batch, queryHeads, seq, dim));
        assertThat(maxAbsDiff(fused, composed)).as("output").isLessThan(1e-5);
        assertThat(maxAbsDiff(q1.getGradient(), q2.getGradient())).as("dq").isLessThan(1e-5);
        assertThat(maxAbsDiff(k1.getGradient(), k2.getGradient())).as("dk").isLessThan(1e-5);
        assertThat(maxAbsDiff(v1.getGradient(), v2.getGradient())).as("dv").isLessThan(1e-5);
        if (causal) { // the first query sees only the first key: its output is v[0] of its kv head
            assertThat(maxAbsDiff(fused.get(":, 0, 0"), v.get(":, 0, 0"))).isLessThan(1e-6);
        }
    }

    /** Blocks of queries (128, 64, 7 rows; 300 tokens) give the one-block attention up to the order of sums. */
    @ParameterizedTest(name = "blockRows={0}")
    @CsvSource({"128", "64", "7"})
    void causalBlocksGiveTheWholeSquare(int blockRows) {
        Random r = new Random(5);
        Shape shape = new Shape(2, 4, 300, 16);
        NDArray q = random(r, shape);
        NDArray k = random(r, shape);
        NDArray v = random(r, shape);
        NDArray upstream = random(r, shape);
        NDArray[] whole = {leaf(q), leaf(k), leaf(v)};
        NDArray[] blocked = {leaf(q), leaf(k), leaf(v)};
        NDArray one = TorchNative.scaledDotProductAttention(whole[0], whole[1], whole[2], true, 0.25, 0);
        JniUtils.backward((PtNDArray) one, (PtNDArray) upstream, false, false);
        NDArray blocks = TorchNative.scaledDotProductAttention(blocked[0], blocked[1], blocked[2], true, 0.25, blockRows);
        JniUtils.backward((PtNDArray) blocks, (PtNDArray) upstream, false, false);

        assertThat(maxAbsDiff(one, blocks)).as("output").isLessThan(1e-6);
        for (int i = 0; i < 3; i++) {
            assertThat(maxAbsDiff(whole[i].getGradient(), blocked[i].getGradient())).as("gradient %d", i)
                    .isLessThan(1e-5);
        }
        assertThatThrownBy(() -> TorchNative.scaledDotProductAttention(q, k, v, true, 0.25, -1))
                .hasMessage("blockRows must be 0 (no blocks) or positive; found -1");
    }

    @Test
    void sdpaRejectsIndivisibleHeads() {
        Random r = new Random(1);
        NDArray q = random(r, new Shape(1, 3, 4, 8));
        NDArray kv = random(r, new Shape(1, 2, 4, 8));
        assertThatThrownBy(() -> TorchNative.scaledDotProductAttention(q, kv, kv, false, 1))
                .isInstanceOf(EngineException.class)
                .hasMessageStartingWith("sdpa: query heads (3) must be a multiple of key/value heads (2)");
    }

    /** Five steps of the native AdamW and of org.djlmegatron.optim.FlatAdamW: bit-identical params and moments. */
    @ParameterizedTest(name = "weightDecay={0}")
    @CsvSource({"0.1", "0"})
    void adamwIsBitIdenticalToTheJavaOptimizer(double weightDecay) {
        int n = 1000;
        Random r = new Random(5);
        float[] p0 = new float[n];
        float[] mask = new float[n];
        for (int i = 0; i < n; i++) {
            p0[i] = (float) r.nextGaussian();
            mask[i] = i % 3 == 0 ? 0 : 1;
        }
        double beta1 = 0.9;
        double beta2 = 0.95;
        double eps = 1e-8;
        FlatAdamW java = new FlatAdamW(beta1, beta2, eps, weightDecay);
        NDArray decayMask = m.create(mask);
        NDArray javaParams = m.create(p0);
        NDArray nativeParams = m.create(p0);
        NDArray expAvg = m.zeros(new Shape(n));
        NDArray expAvgSq = m.zeros(new Shape(n));
        try (NDManager steps = m.newSubManager()) {
            for (int step = 1; step <= 5; step++) {
                float[] g = new float[n];
                for (int i = 0; i < n; i++) {
                    g[i] = (float) (r.nextGaussian() * Math.pow(10, -step));
                }
                double lr = 3e-3 * step;
                java.step(javaParams, steps.create(g), decayMask, lr, step);
                TorchNative.adamwStep(nativeParams, steps.create(g), expAvg, expAvgSq, decayMask, lr, beta1, beta2, eps,
                        weightDecay, step);
            }
        }
        assertThat(bits(nativeParams)).containsExactly(bits(javaParams));
        assertThat(bits(expAvg)).containsExactly(bits(java.state().get("exp_avg")));
        assertThat(bits(expAvgSq)).containsExactly(bits(java.state().get("exp_avg_sq")));
        assertThat(bits(nativeParams)).isNotEqualTo(bits(m.create(p0)));
    }

    static int[] bits(NDArray x) {
        float[] f = x.toFloatArray();
        int[] out = new int[f.length];
        for (int i = 0; i < f.length; i++) {
            out[i] = Float.floatToRawIntBits(f[i]);
        }
        return out;
    }

    /** DJL's toType runs without grad; TorchNative.cast is recorded. */
    @Test
    void geluTanhIsGpt2sFormulaWithItsDerivative() {
        double[] xs = {-4, -1.5, -0.5, -1e-3, 0, 0.25, 1, 2.5, 6};
        float[] in = new float[xs.length];
        for (int i = 0; i < xs.length; i++) {
            in[i] = (float) xs[i];
        }
        NDArray x = m.create(in);
        x.setRequiresGradient(true);
        NDArray y = TorchNative.geluTanh(x);
        JniUtils.backward((PtNDArray) y, (PtNDArray) y.onesLike(), false, false);
        float[] values = y.toFloatArray();
        float[] grads = x.getGradient().toFloatArray();
        double c = Math.sqrt(2 / Math.PI);
        for (int i = 0; i < xs.length; i++) {
            double v = in[i];
            double t = Math.tanh(c * (v + 0.044715 * v * v * v));
            double value = 0.5 * v * (1 + t);
            double slope = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * c * (1 + 3 * 0.044715 * v * v);
            assertThat((double) values[i]).as("gelu(%s)", v).isCloseTo(value, org.assertj.core.data.Offset.offset(1e-6));
            assertThat((double) grads[i]).as("gelu'(%s)", v).isCloseTo(slope, org.assertj.core.data.Offset.offset(1e-5));
        }
    }

    /**
     * DJL's {@code linear} on bf16 CPU tensors multiplies in fp32 and rounds each result to bf16
     * once (libtorch 1.13's CPU bf16 gemm rounds partial sums): values and gradients of x, W and b
     * are the fp32 computation's on the same rounded inputs, within one bf16 rounding (2^-8 relative).
     */
    @ParameterizedTest(name = "{0}, bias {1}, frozen weight {2}")
    @CsvSource({"BFLOAT16, true, false", "BFLOAT16, false, false", "BFLOAT16, true, true"})
    void sixteenBitLinearMatchesFp32InValuesAndGradients(DataType type, boolean bias, boolean frozen) {
        Random r = new Random(11);
        NDArray x32 = random(r, new Shape(2, 5, 24)).toType(type, false).toType(DataType.FLOAT32, false);
        NDArray w32 = random(r, new Shape(40, 24)).toType(type, false).toType(DataType.FLOAT32, false);
        NDArray b32 = random(r, new Shape(40)).toType(type, false).toType(DataType.FLOAT32, false);
        NDArray up32 = random(r, new Shape(2, 5, 40)).toType(type, false).toType(DataType.FLOAT32, false);
        NDArray[] fp32 = linearWithGradients(x32, w32, bias ? b32 : null, up32, frozen);
        NDArray[] half = linearWithGradients(x32.toType(type, false), w32.toType(type, false),
                bias ? b32.toType(type, false) : null, up32.toType(type, false), frozen);
        assertThat(half[0].getDataType()).isEqualTo(type);
        for (int i = 0; i < fp32.length; i++) {
            if (fp32[i] == null) {
                assertThat(half[i]).as("gradient %d", i).isNull();
                continue;
            }
            double scale = fp32[i].abs().max().getFloat();
            assertThat(maxAbsDiff(half[i], fp32[i]) / scale).as("output/gradient %d, relative", i).isLessThan(1.0 / 256);
        }
    }

    /** {y, dx, dW, db} of linear(x, W, b) back-propagated from {@code up}; null where no gradient is asked. */
    private static NDArray[] linearWithGradients(NDArray x, NDArray w, NDArray b, NDArray up, boolean frozen) {
        NDArray xl = leaf(x);
        NDArray wl = frozen ? w.duplicate() : leaf(w);
        NDArray bl = b == null ? null : leaf(b);
        NDArray y = xl.getNDArrayInternal().linear(xl, wl, bl).singletonOrThrow();
        JniUtils.backward((PtNDArray) y, (PtNDArray) up, false, false);
        return new NDArray[] {y, xl.getGradient(), frozen ? null : wl.getGradient(), bl == null ? null : bl.getGradient()};
    }

    @Test
    void castKeepsGradientsFlowing() {
        NDArray x = leaf(m.create(new float[] {1, -2, 0.5f}));
        NDArray half = TorchNative.cast(x, DataType.FLOAT16);
        assertThat(half.getDataType()).isEqualTo(DataType.FLOAT16);
        NDArray loss = TorchNative.cast(half.mul(half), DataType.FLOAT32).sum();
        JniUtils.backward((PtNDArray) loss, (PtNDArray) m.ones(new Shape()), false, false);
        assertThat(x.getGradient().toFloatArray()).containsExactly(2, -4, 1);
        assertThat(TorchNative.cast(x, DataType.FLOAT32)).isSameAs(x);

        NDArray y = leaf(m.create(new float[] {1, -2, 0.5f}));
        NDArray detached = y.toType(DataType.FLOAT16, false);
        NDArray djlLoss = detached.mul(detached).toType(DataType.FLOAT32, false).sum();
        assertThatThrownBy(() -> JniUtils.backward((PtNDArray) djlLoss, (PtNDArray) m.ones(new Shape()), false, false))
                .isInstanceOf(EngineException.class)
                .hasMessageStartingWith("torchBackward: ");
    }

    /**
     * ZeRO-3's freeing: a parameter bound into a buffer, used in a forward whose backward needs it,
     * then its storage freed (0 bytes while autograd still holds the tensor), reallocated and
     * refilled through the buffer: backward runs without an in-place-modification error and sees
     * the refilled values.
     */
    @Test
    void freedStorageIsRefilledThroughAnAliasBeforeBackward() {
        NDArray w = leaf(m.create(new float[] {1, 2, 3}));
        NDArray buffer = m.zeros(new Shape(4));
        TorchNative.bindToBuffer(w, buffer, 0);
        NDArray x = leaf(m.create(new float[] {4, 5, 6}));
        NDArray loss = x.mul(w).sum(); // saves w for x's gradient
        assertThat(TorchNative.storageBytes(w)).isEqualTo(16);

        TorchNative.resizeStorage(buffer, 0);
        assertThat(TorchNative.storageBytes(w)).isZero();
        assertThat(TorchNative.storageBytes(buffer)).isZero();

        TorchNative.resizeStorage(buffer, 16);
        buffer.set(new ai.djl.ndarray.index.NDIndex("..."), m.create(new float[] {7, 8, 9, 0}));
        assertThat(TorchNative.storageBytes(w)).isEqualTo(16);
        assertThat(w.toFloatArray()).containsExactly(7, 8, 9);
        JniUtils.backward((PtNDArray) loss, (PtNDArray) m.ones(new Shape()), false, false);
        assertThat(x.getGradient().toFloatArray()).containsExactly(7, 8, 9);
        assertThat(w.getGradient().toFloatArray()).containsExactly(4, 5, 6);
        assertThatThrownBy(() -> TorchNative.resizeStorage(buffer, -1)).isInstanceOf(EngineException.class)
                .hasMessageContaining("storage bytes must be >= 0, found -1");
    }

    @Test
    void dataPointerAddressesTheFirstElement() {
        NDArray x = m.arange(12f).reshape(3, 4);
        long base = TorchNative.dataPointer(x);
        assertThat(base).isNotZero();
        assertThat(TorchNative.dataPointer(x.get("1"))).isEqualTo(base + 4 * Float.BYTES);
        assertThat(TorchNative.dataPointer(x.get(":, 2"))).isEqualTo(base + 2 * Float.BYTES);
    }

    @Test
    void cudaQueriesAreHarmlessWithoutCuda() {
        if (!TorchNative.version().endsWith("cuda no")) {
            assertThat(TorchNative.cudaDeviceCount()).isPositive();
            return;
        }
        assertThat(TorchNative.cudaDeviceCount()).isZero();
        assertThat(TorchNative.currentCudaStream(0)).isZero();
        TorchNative.synchronizeCuda(0);
        assertThat(TorchNative.cudaMemoryStats(0)).containsExactly(0, 0, 0, 0);
        assertThatThrownBy(() -> TorchNative.manualSeed(0, 1))
                .isInstanceOf(EngineException.class)
                .hasMessageStartingWith("seed: CUDA device 0 requested");
    }

    @Test
    void cpuSeedRepeatsSampling() {
        TorchNative.manualSeed(-1, 1234);
        float[] first = m.randomNormal(new Shape(6)).toFloatArray();
        TorchNative.manualSeed(-1, 1234);
        assertThat(m.randomNormal(new Shape(6)).toFloatArray()).containsExactly(first);
    }
}
