package org.djlmegatron.training.buffers;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.jni.JniUtils;
import java.util.List;
import java.util.Random;
import org.djlmegatron.engine.TorchNative;
import org.djlmegatron.optim.FlatAdamW;
import org.djlmegatron.training.model.TrainableParameter;
import org.djlmegatron.engine.GradModeTestBase;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** The contiguous buffers and the one-pass natives of the lean step, against plain libtorch arithmetic. */
@Tag("native")
class ParamAndGradBufferTest extends GradModeTestBase {


    private NDArray random(Random r, Shape shape) {
        float[] v = new float[(int) shape.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) r.nextGaussian();
        }
        return m.create(v, shape).duplicate();
    }

    /** Weights keep their values as views of the buffer, and two backwards accumulate into the gradient buffer. */
    @Test
    void parametersAreViewsAndGradientsAccumulateInTheBuffer() {
        Random r = new Random(3);
        NDArray w = random(r, new Shape(3, 4));
        NDArray b = random(r, new Shape(4));
        float[] w0 = floats(w);
        float[] b0 = floats(b);
        w.setRequiresGradient(true);
        b.setRequiresGradient(true);
        List<TrainableParameter> params = List.of(new TrainableParameter("w", w, false, true),
                new TrainableParameter("b", b, true, false));
        try (ParamAndGradBuffer buf = new ParamAndGradBuffer(params, 4, 5, m)) {
            assertThat(buf.paddedSize()).isEqualTo(16); // 12 + 4, already a multiple of 4
            assertThat(floats(w)).containsExactly(w0);
            float[] all = floats(buf.params());
            for (int i = 0; i < 12; i++) {
                assertThat(all[i]).isEqualTo(w0[i]);
            }
            // the buffer is the weights' storage: writing it changes what the parameter reads
            buf.params().set(new ai.djl.ndarray.index.NDIndex("12"), 7f);
            assertThat(floats(b)[0]).isEqualTo(7f);
            NDArray x = random(r, new Shape(2, 3));
            for (int pass = 0; pass < 2; pass++) {
                NDArray y = x.matMul(w).add(b).sum();
                JniUtils.backward((ai.djl.pytorch.engine.PtNDArray) y,
                        (ai.djl.pytorch.engine.PtNDArray) m.ones(new Shape()), false, false);
            }
            // d/dW sum(xW + b) = x^T 1, d/db = rows; twice
            float[] xs = floats(x);
            float[] g = floats(buf.mainGrads());
            for (int i = 0; i < 3; i++) {
                for (int j = 0; j < 4; j++) {
                    assertThat(g[i * 4 + j]).isEqualTo(2 * (xs[i] + xs[3 + i]), org.assertj.core.data.Offset.offset(1e-6f));
                }
            }
            for (int j = 0; j < 4; j++) {
                assertThat(g[12 + j]).isEqualTo(4f);
            }
            assertThat(floats(w.getGradient())[0]).isEqualTo(g[0]);
            buf.zeroGradients();
            assertThat(floats(buf.mainGrads())).containsOnly(0f);
            assertThat(floats(b.getGradient())).containsOnly(0f);
        }
    }

    /**
     * Tensor-parallel completion on the main gradient: the flagged parameter's gradient becomes
     * the sum over the group on both ranks (1 + 2 times the values), the other keeps its own.
     */
    @Test
    void tensorParallelCompletionSumsOnlyThePartialGradients() throws Exception {
        List<org.djlmegatron.comm.ThreadProcessGroup> tp = org.djlmegatron.comm.ThreadProcessGroup.newGroup("tp",
                new int[] {0, 1}, java.time.Duration.ofSeconds(60));
        java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(2);
        try {
            List<java.util.concurrent.Future<float[]>> out = new java.util.ArrayList<>();
            for (int rank = 0; rank < 2; rank++) {
                int r = rank;
                out.add(pool.submit(() -> {
                    try (ai.djl.ndarray.NDManager own = m.newSubManager()) {
                        NDArray a = own.zeros(new Shape(2));
                        NDArray b = own.zeros(new Shape(3));
                        a.setRequiresGradient(true);
                        b.setRequiresGradient(true);
                        List<TrainableParameter> params = List.of(new TrainableParameter("a", a, true, false, false, true),
                                new TrainableParameter("b", b, false, true));
                        try (ParamAndGradBuffer buf = new ParamAndGradBuffer(params, 1, 100, own)) {
                            buf.mainGrads().set(new ai.djl.ndarray.index.NDIndex("0:5"),
                                    own.create(new float[] {1, 2, 10, 20, 30}).mul(r + 1));
                            buf.completeTensorParallel(tp.get(r));
                            return floats(buf.mainGrads());
                        }
                    }
                }));
            }
            assertThat(out.get(0).get()).containsExactly(3f, 6f, 10f, 20f, 30f);
            assertThat(out.get(1).get()).containsExactly(3f, 6f, 20f, 40f, 60f);
        } finally {
            pool.shutdownNow();
        }
    }

    /** Buckets cover the buffer from its end backwards (backward's order), each at most the bucket size. */
    @Test
    void bucketsRunFromTheEndBackwards() {
        NDArray w = m.zeros(new Shape(10));
        w.setRequiresGradient(true);
        try (ParamAndGradBuffer buf = new ParamAndGradBuffer(List.of(new TrainableParameter("w", w, false, true)), 1, 4, m)) {
            assertThat(buf.buckets()).containsExactly(new long[] {6, 10}, new long[] {2, 6}, new long[] {0, 2});
        }
    }

    /** unscaleAndNorm: the scaled gradient, the masked sum of squares and the non-finite count, against composed ops. */
    @Test
    void unscaleAndNormIsOnePassOfTheComposedArithmetic() {
        Random r = new Random(9);
        int n = 200_003; // several fixed-size chunks and a ragged tail
        NDArray g = random(r, new Shape(n));
        NDArray mask = m.create(new float[n]);
        mask = mask.add(1f);
        mask.set(new ai.djl.ndarray.index.NDIndex("0:1000"), 0f);
        NDArray expected = g.mul(0.25f);
        double sum = expected.get("1000:").square().toType(DataType.FLOAT64, false).sum().getDouble();
        double[] out = TorchNative.unscaleAndNorm(g, mask, 0.25);
        assertThat(floats(g)).containsExactly(floats(expected));
        assertThat(out[0]).isCloseTo(sum, org.assertj.core.data.Offset.offset(1e-9 * sum));
        assertThat(out[1]).isZero();
        g.set(new ai.djl.ndarray.index.NDIndex("5"), Float.NaN);
        g.set(new ai.djl.ndarray.index.NDIndex("150000"), Float.POSITIVE_INFINITY);
        assertThat(TorchNative.unscaleAndNorm(g, mask, 1.0)[1]).isEqualTo(2.0);
    }

    /** The one-pass AdamW equals the composed AdamW bit for bit, the clipping coefficient included. */
    @Test
    void adamwInPlaceIsBitIdenticalToTheComposedSteps() {
        Random r = new Random(11);
        int n = 70_001;
        NDArray p0 = random(r, new Shape(n));
        float[] maskValues = new float[n];
        for (int i = 0; i < n; i++) {
            maskValues[i] = i % 3 == 0 ? 0 : 1;
        }
        NDArray mask = m.create(maskValues).duplicate();
        NDArray composed = p0.duplicate();
        NDArray fused = p0.duplicate();
        NDArray expAvg = m.zeros(new Shape(n));
        NDArray expAvgSq = m.zeros(new Shape(n));
        for (int step = 1; step <= 4; step++) {
            NDArray g = random(r, new Shape(n)).mul((float) Math.pow(10, -step));
            double coeff = step % 2 == 0 ? 0.37 : 1.0;
            double lr = 1e-3 * step;
            NDArray clipped = coeff == 1.0 ? g : g.mul((float) coeff);
            TorchNative.adamwStep(composed, clipped, expAvg, expAvgSq, mask, lr, 0.9, 0.95, 1e-8, 0.1, step);
            fusedStep(fused, g, mask, coeff, lr, step);
        }
        assertThat(floats(fused)).containsExactly(floats(composed));
        assertThat(floats(fused)).isNotEqualTo(floats(p0));
    }

    /** Eight micro-batches whose bf16 gradients are d/dw sum(w * x_m) = x_m (bf16 values of [1, 1.1)). */
    private static final int MICRO = 8;

    private NDArray[] bf16Inputs(Random r, int n) {
        NDArray[] x = new NDArray[MICRO];
        for (int k = 0; k < MICRO; k++) {
            float[] v = new float[n];
            for (int i = 0; i < n; i++) {
                v[i] = 1f + 0.1f * r.nextFloat();
            }
            x[k] = m.create(v).toType(DataType.BFLOAT16, false);
        }
        return x;
    }

    /** The sums of the micro-batches' bf16 gradients, in double (what exact accumulation gives). */
    private static double[] exactSums(NDArray[] x, int n) {
        double[] sum = new double[n];
        for (NDArray xm : x) {
            float[] v = floats(xm);
            for (int i = 0; i < n; i++) {
                sum[i] += v[i];
            }
        }
        return sum;
    }

    private static double maxRelativeError(float[] actual, double[] exact) {
        double worst = 0;
        for (int i = 0; i < exact.length; i++) {
            worst = Math.max(worst, Math.abs(actual[i] - exact[i]) / exact[i]);
        }
        return worst;
    }

    private void backward(NDArray w, NDArray x) {
        NDArray y = w.mul(x).sum();
        JniUtils.backward((ai.djl.pytorch.engine.PtNDArray) y, (ai.djl.pytorch.engine.PtNDArray) m.ones(new Shape())
                .toType(DataType.BFLOAT16, false), false, false);
    }

    /**
     * bf16 weights: adding each micro-batch's gradients into the fp32 main gradient keeps the sum
     * exact to fp32 rounding; left in the bf16 gradient buffer (libtorch's own accumulation) it
     * loses bits at every addition.
     */
    @Test
    void bf16MicroBatchGradientsAccumulateInTheFp32MainGradient() {
        int n = 4096;
        Random r = new Random(5);
        NDArray[] x = bf16Inputs(r, n);
        double[] exact = exactSums(x, n);
        NDArray w = m.zeros(new Shape(n), DataType.BFLOAT16);
        w.setRequiresGradient(true);
        try (ParamAndGradBuffer buf = new ParamAndGradBuffer(List.of(new TrainableParameter("w", w, false, true)), 1,
                n, m)) {
            for (NDArray xm : x) {
                backward(w, xm);
                buf.accumulateIntoMain();
            }
            assertThat(maxRelativeError(floats(buf.mainGrads()), exact)).isLessThan(1e-6);
            buf.zeroGradients();
            for (NDArray xm : x) {
                backward(w, xm); // without accumulateIntoMain: the sum builds up in w's bf16 .grad
            }
            assertThat(maxRelativeError(floats(w.getGradient()), exact)).as("bf16 accumulation").isGreaterThan(1e-3);
        }
    }

    /**
     * {@code --overlap-grad-reduce} with bf16 weights adds the last micro-batch's gradients into the
     * fp32 main gradient bucket by bucket (in reduction order, on the communication thread): the
     * same sums, bit for bit, as the whole-buffer addition, and the bf16 buckets are zeroed.
     */
    @Test
    void bucketByBucketAccumulationIsTheWholeBufferOneBitForBit() {
        int n = 4096;
        Random r = new Random(7);
        NDArray[] x = bf16Inputs(r, n);
        NDArray w = m.zeros(new Shape(n), DataType.BFLOAT16);
        w.setRequiresGradient(true);
        try (ParamAndGradBuffer buf = new ParamAndGradBuffer(List.of(new TrainableParameter("w", w, false, true)), 1,
                1000, m)) {
            assertThat(buf.buckets()).hasSize(5);
            float[][] mains = new float[2][];
            for (int way = 0; way < 2; way++) {
                buf.zeroGradients();
                backward(w, x[0]);
                buf.accumulateIntoMain();
                backward(w, x[1]);
                if (way == 0) {
                    buf.accumulateIntoMain();
                } else {
                    for (long[] b : buf.buckets()) {
                        buf.accumulateIntoMain(b[0], b[1]);
                    }
                }
                mains[way] = floats(buf.mainGrads());
                assertThat(floats(w.getGradient())).as("bf16 gradients zeroed").containsOnly(0f);
            }
            assertThat(mains[1]).containsExactly(mains[0]);
            double[] exact = exactSums(new NDArray[] {x[0], x[1]}, n);
            assertThat(maxRelativeError(mains[1], exact)).isLessThan(1e-6);
        }
    }

    /**
     * ZeRO-2: each micro-batch's gradients land in a workspace, are added into the fp32 shard and
     * dropped (the parameter has no gradient between micro-batches); the shard holds the fp32 sum.
     */
    @Test
    void zero2KeepsTheFp32ShardAndDropsTheMicroBatchGradients() {
        int n = 4096;
        Random r = new Random(6);
        NDArray[] x = bf16Inputs(r, n);
        double[] exact = exactSums(x, n);
        NDArray w = m.zeros(new Shape(n), DataType.BFLOAT16);
        w.setRequiresGradient(true);
        org.djlmegatron.comm.ProcessGroup one = org.djlmegatron.comm.ThreadProcessGroup.newGroup("dp", new int[] {0},
                java.time.Duration.ofSeconds(60)).get(0);
        try (ParamAndGradBuffer buf = new ParamAndGradBuffer(List.of(new TrainableParameter("w", w, false, true)), 1,
                n, m, false);
                GradientShard shard = new GradientShard(buf, one, m)) {
            assertThat(buf.mainGrads()).isNull();
            shard.zero();
            for (NDArray xm : x) {
                shard.beginMicroBatch();
                backward(w, xm);
                shard.endMicroBatch();
                // no .grad: DJL answers each getGradient() with new zeros, not one tensor's storage twice
                NDArray g1 = w.getGradient();
                NDArray g2 = w.getGradient();
                assertThat(TorchNative.dataPointer(g1)).as("no gradient between micro-batches")
                        .isNotEqualTo(TorchNative.dataPointer(g2));
            }
            assertThat(shard.bytes()).isEqualTo(4L * n);
            assertThat(maxRelativeError(floats(shard.averaged(1)), exact)).isLessThan(1e-6);
        }
    }

    private final FlatAdamW fusedAdam = new FlatAdamW(0.9, 0.95, 1e-8, 0.1);

    private void fusedStep(NDArray p, NDArray g, NDArray mask, double coeff, double lr, long step) {
        fusedAdam.step(p, g, mask, coeff, lr, step);
    }
}
