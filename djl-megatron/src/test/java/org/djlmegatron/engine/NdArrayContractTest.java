package org.djlmegatron.engine;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * DJL's public NDArray API on the project's library, against values computed here in plain Java: creation in
 * every dtype, arithmetic, reductions, indexing, linear algebra, shape operations, sorting, autograd, seeding.
 */
@Tag("native")
class NdArrayContractTest extends ArrayTestBase {

    /** 2 x 3, row-major. */
    static final float[] A = {1, 2, 3, 4, 5, 6};
    /** 3 x 2. */
    static final float[] C = {0.5f, -1, 2, 0, -3, 1.5f};
    /** A row broadcast over A's rows. */
    static final float[] ROW = {0.5f, -1, 2};

    static long[] longs(NDArray a) {
        return a.toType(DataType.INT64, false).toLongArray();
    }

    NDArray a() {
        return m.create(A, new Shape(2, 3));
    }

    /** 0 .. 11 as 3 x 4. */
    NDArray grid() {
        return m.arange(12f).reshape(3, 4);
    }

    @Test
    void createsEveryDtypeAndReadsItBack() {
        float[] exact = {0, 1, -2, 3.5f, 100, -0.25f}; // exact in fp16 and bf16
        for (DataType t : new DataType[] {DataType.FLOAT32, DataType.FLOAT64, DataType.FLOAT16, DataType.BFLOAT16}) {
            NDArray x = m.create(exact).toType(t, false);
            assertThat(x.getDataType()).isEqualTo(t);
            assertThat(floats(x)).containsExactly(exact);
            assertThat(floats(m.ones(new Shape(2, 3), t).sum())).containsExactly(6f);
            assertThat(floats(m.zeros(new Shape(4), t))).containsExactly(0, 0, 0, 0);
            assertThat(floats(m.full(new Shape(2), 2.5f, t))).containsExactly(2.5f, 2.5f);
        }
        int[] ints = {0, 1, -2, 3, 100, -7};
        for (DataType t : new DataType[] {DataType.INT8, DataType.INT16, DataType.INT32, DataType.INT64}) {
            NDArray x = m.create(ints).toType(t, false);
            assertThat(x.getDataType()).isEqualTo(t);
            assertThat(longs(x)).containsExactly(0, 1, -2, 3, 100, -7);
            assertThat(m.zeros(new Shape(3), t).getDataType()).isEqualTo(t);
        }
        NDArray u8 = m.create(new int[] {0, 1, 200, 255}).toType(DataType.UINT8, false);
        assertThat(u8.getDataType()).isEqualTo(DataType.UINT8);
        assertThat(longs(u8)).containsExactly(0, 1, 200, 255);
        NDArray bool = m.create(new boolean[] {true, false, true});
        assertThat(bool.getDataType()).isEqualTo(DataType.BOOLEAN);
        assertThat(bool.toBooleanArray()).containsExactly(true, false, true);
        assertThat(floats(m.arange(0f, 1f, 0.25f))).containsExactly(0, 0.25f, 0.5f, 0.75f);
        assertThat(floats(m.eye(2))).containsExactly(1, 0, 0, 1);
        assertThat(floats(m.linspace(0f, 1f, 3))).containsExactly(0, 0.5f, 1);
    }

    /** Raw bytes: bf16 is the upper half of the fp32 bit pattern, fp16 IEEE half, little-endian. */
    @Test
    void halfPrecisionBytesAreNative() {
        float[] v = {1f, -2f, 3.5f};
        ByteBuffer bf16 = m.create(v).toType(DataType.BFLOAT16, false).toByteBuffer().order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < v.length; i++) {
            assertThat(bf16.getShort(2 * i)).isEqualTo((short) (Float.floatToIntBits(v[i]) >>> 16));
        }
        ByteBuffer fp16 = m.create(v).toType(DataType.FLOAT16, false).toByteBuffer().order(ByteOrder.LITTLE_ENDIAN);
        short[] half = {0x3C00, (short) 0xC000, 0x4300}; // 1, -2, 3.5 in IEEE binary16
        for (int i = 0; i < v.length; i++) {
            assertThat(fp16.getShort(2 * i)).isEqualTo(half[i]);
        }
    }

    @Test
    void arithmeticBroadcastsLikeJava() {
        NDArray row = m.create(ROW);
        float[] add = new float[6];
        float[] sub = new float[6];
        float[] mul = new float[6];
        float[] div = new float[6];
        float[] pow = new float[6];
        for (int i = 0; i < 6; i++) {
            float r = ROW[i % 3];
            add[i] = A[i] + r;
            sub[i] = A[i] - r;
            mul[i] = A[i] * r;
            div[i] = A[i] / r;
            pow[i] = A[i] * A[i];
        }
        assertThat(floats(a().add(row))).containsExactly(add);
        assertThat(floats(a().sub(row))).containsExactly(sub);
        assertThat(floats(a().mul(row))).containsExactly(mul);
        assertThat(floats(a().div(row))).containsExactly(div);
        assertThat(floats(a().pow(2))).containsExactly(pow);
        assertThat(floats(a().duplicate().addi(row))).containsExactly(add);
        assertThat(floats(a().duplicate().muli(row))).containsExactly(mul);
        assertThat(floats(a().neg())).containsExactly(-1, -2, -3, -4, -5, -6);
        assertThat(floats(m.create(C).abs())).containsExactly(0.5f, 1, 2, 0, 3, 1.5f);
        assertThat(floats(a().mul(3f).add(1f).div(2f).sub(0.5f))).containsExactly(1.5f, 3, 4.5f, 6, 7.5f, 9);
        assertThat(floats(a().clip(2, 5))).containsExactly(2, 2, 3, 4, 5, 5);
        float[] exp = floats(m.create(C).exp());
        float[] tanh = floats(m.create(C).tanh());
        for (int i = 0; i < C.length; i++) {
            assertThat(exp[i]).isCloseTo((float) Math.exp(C[i]), within(1e-6f * (float) Math.exp(C[i])));
            assertThat(tanh[i]).isCloseTo((float) Math.tanh(C[i]), within(1e-6f));
        }
    }

    @Test
    void reductionsMatchJava() {
        NDArray a = a();
        assertThat(floats(a.sum())).containsExactly(21f);
        assertThat(floats(a.mean())).containsExactly(3.5f);
        assertThat(floats(a.max())).containsExactly(6f);
        assertThat(floats(a.min())).containsExactly(1f);
        assertThat(floats(a.prod())).containsExactly(720f);
        assertThat(floats(a.sum(new int[] {0}))).containsExactly(5, 7, 9);
        assertThat(floats(a.sum(new int[] {1}, true))).containsExactly(6, 15);
        assertThat(a.sum(new int[] {1}, true).getShape()).isEqualTo(new Shape(2, 1));
        assertThat(floats(a.mean(new int[] {1}))).containsExactly(2, 5);
        assertThat(floats(a.max(new int[] {0}))).containsExactly(4, 5, 6);
        NDArray c = m.create(C, new Shape(3, 2));
        assertThat(longs(c.argMax())).containsExactly(2);
        assertThat(longs(c.argMax(1))).containsExactly(0, 0, 1);
        assertThat(longs(c.argMin(0))).containsExactly(2, 0);
        assertThat(floats(a.cumSum(1))).containsExactly(1, 3, 6, 4, 9, 15);
        assertThat(floats(m.create(new float[] {3, 4}).norm())).containsExactly(5f);
    }

    @Test
    void indexingGetsAndSets() {
        NDArray x = grid();
        assertThat(floats(x.get("1"))).containsExactly(4, 5, 6, 7);
        assertThat(floats(x.get(":, 2"))).containsExactly(2, 6, 10);
        assertThat(floats(x.get("1:3, ::2"))).containsExactly(4, 6, 8, 10);
        assertThat(floats(x.get("-1, -1"))).containsExactly(11);
        assertThat(floats(x.get("..., 1"))).containsExactly(1, 5, 9);
        assertThat(x.get("null, 0").getShape()).isEqualTo(new Shape(1, 4));
        assertThat(floats(x.get(new NDIndex("{}", m.create(new long[] {2, 0}))))).containsExactly(8, 9, 10, 11, 0, 1, 2, 3);
        assertThat(floats(x.get(x.gt(8f)))).containsExactly(9, 10, 11);
        assertThat(floats(x.get(2, 3))).containsExactly(11);

        NDArray y = grid();
        y.set(new NDIndex("0"), -1f);
        y.set(new NDIndex(":, 3"), m.create(new float[] {7, 8, 9}));
        y.set(new NDIndex("2, 0:2"), m.create(new float[] {-5, -6}));
        assertThat(floats(y)).containsExactly(-1, -1, -1, 7, 4, 5, 6, 8, -5, -6, 10, 9);
        NDArray z = grid();
        z.set(z.lt(3f), 0f);
        assertThat(floats(z.get("0"))).containsExactly(0, 0, 0, 3);
        NDArray w = m.zeros(new Shape(2, 2));
        w.set(new float[] {1, 2, 3, 4});
        assertThat(floats(w)).containsExactly(1, 2, 3, 4);
    }

    @Test
    void matMulSoftmaxGather() {
        NDArray c = m.create(C, new Shape(3, 2));
        float[] expected = new float[4];
        for (int i = 0; i < 2; i++) {
            for (int j = 0; j < 2; j++) {
                for (int k = 0; k < 3; k++) {
                    expected[i * 2 + j] += A[i * 3 + k] * C[k * 2 + j];
                }
            }
        }
        assertThat(floats(a().matMul(c))).containsExactly(expected);
        assertThat(floats(m.create(A).dot(m.create(new float[] {1, 1, 1, 1, 1, 1})))).containsExactly(21f);

        float[] soft = floats(a().softmax(1));
        float[] logSoft = floats(a().logSoftmax(1));
        for (int i = 0; i < 2; i++) {
            double z = 0;
            for (int k = 0; k < 3; k++) {
                z += Math.exp(A[i * 3 + k]);
            }
            for (int k = 0; k < 3; k++) {
                assertThat(soft[i * 3 + k]).isCloseTo((float) (Math.exp(A[i * 3 + k]) / z), within(1e-6f));
                assertThat(logSoft[i * 3 + k]).isCloseTo((float) (A[i * 3 + k] - Math.log(z)), within(1e-5f));
            }
        }

        NDArray index = m.create(new long[] {0, 3, 1, 1, 2, 0}, new Shape(3, 2));
        assertThat(floats(grid().gather(index, 1))).containsExactly(0, 3, 5, 5, 10, 8);
        assertThat(floats(grid().take(m.create(new long[] {11, 0, 5})))).containsExactly(11, 0, 5);
        assertThat(floats(m.create(new long[] {2, 0}).oneHot(3))).containsExactly(0, 0, 1, 1, 0, 0);
    }

    @Test
    void shapeOperations() {
        NDArray x = grid();
        assertThat(x.transpose().getShape()).isEqualTo(new Shape(4, 3));
        assertThat(floats(x.transpose().get("0"))).containsExactly(0, 4, 8);
        assertThat(floats(x.reshape(2, 6).get("1"))).containsExactly(6, 7, 8, 9, 10, 11);
        assertThat(x.reshape(-1).getShape()).isEqualTo(new Shape(12));
        assertThat(x.expandDims(0).getShape()).isEqualTo(new Shape(1, 3, 4));
        assertThat(x.expandDims(0).squeeze().getShape()).isEqualTo(new Shape(3, 4));
        assertThat(floats(x.swapAxes(0, 1).get("3"))).containsExactly(3, 7, 11);
        assertThat(floats(x.flip(1).get("0"))).containsExactly(3, 2, 1, 0);
        assertThat(floats(x.get("0").repeat(0, 2))).containsExactly(0, 0, 1, 1, 2, 2, 3, 3);
        assertThat(x.broadcast(new Shape(2, 3, 4)).getShape()).isEqualTo(new Shape(2, 3, 4));

        NDArray cat = a().concat(a(), 0);
        assertThat(cat.getShape()).isEqualTo(new Shape(4, 3));
        assertThat(floats(cat.get("2"))).containsExactly(1, 2, 3);
        NDArray stack = NDArrays.stack(new NDList(a(), a().neg()));
        assertThat(stack.getShape()).isEqualTo(new Shape(2, 2, 3));
        assertThat(floats(stack.get("1, 1"))).containsExactly(-4, -5, -6);
        NDList parts = x.split(new long[] {1, 3}, 1);
        assertThat(parts).hasSize(3);
        assertThat(parts.get(1).getShape()).isEqualTo(new Shape(3, 2));
        assertThat(floats(parts.get(2))).containsExactly(3, 7, 11);
        NDList thirds = x.split(3, 0);
        assertThat(floats(thirds.get(1))).containsExactly(4, 5, 6, 7);
    }

    @Test
    void comparisonsWhereSortTopK() {
        NDArray x = m.create(new float[] {3, -1, 4, 1, -5, 9});
        assertThat(x.gt(1f).toBooleanArray()).containsExactly(true, false, true, false, false, true);
        assertThat(x.gte(1f).toBooleanArray()).containsExactly(true, false, true, true, false, true);
        assertThat(x.lt(0f).toBooleanArray()).containsExactly(false, true, false, false, true, false);
        assertThat(x.eq(4f).toBooleanArray()).containsExactly(false, false, true, false, false, false);
        assertThat(x.neq(x.neg()).toBooleanArray()).containsOnly(true);
        assertThat(floats(NDArrays.where(x.gt(0f), x, x.neg()))).containsExactly(3, 1, 4, 1, 5, 9);
        assertThat(x.gt(0f).logicalAnd(x.lt(4f)).toBooleanArray())
                .containsExactly(true, false, false, true, false, false);

        assertThat(floats(x.sort())).containsExactly(-5, -1, 1, 3, 4, 9);
        assertThat(longs(x.argSort(0, false))).containsExactly(5, 2, 0, 3, 1, 4);
        NDList top = x.topK(2, 0, true, true);
        assertThat(floats(top.get(0))).containsExactly(9, 4);
        assertThat(longs(top.get(1))).containsExactly(5, 2);
        assertThat(m.create(new float[] {0, Float.NaN}).isNaN().toBooleanArray()).containsExactly(false, true);
    }

    @Test
    void castsTruncateAndConvert() {
        NDArray x = m.create(new float[] {1.7f, -1.7f, 0f});
        assertThat(x.toType(DataType.INT32, false).toIntArray()).containsExactly(1, -1, 0);
        assertThat(x.toType(DataType.BOOLEAN, false).toBooleanArray()).containsExactly(true, true, false);
        assertThat(floats(m.create(new int[] {7, -3}).toType(DataType.FLOAT64, false))).containsExactly(7, -3);
        assertThat(m.create(new double[] {0.1}).toType(DataType.FLOAT32, false).toFloatArray()).containsExactly(0.1f);
    }

    /** Scalar operands (mul(Number) and friends) inside the graph: gradients stay exact over many passes. */
    @Test
    void backwardThroughJniUtils() {
        boolean previous = JniUtils.isGradMode();
        JniUtils.setGradMode(true);
        try {
            NDArray w = m.create(new float[] {1, 2, 3});
            w.setRequiresGradient(true);
            NDArray y = w.mul(w).sum();
            JniUtils.backward((PtNDArray) y, (PtNDArray) m.ones(new Shape()), false, false);
            assertThat(floats(w.getGradient())).containsExactly(2, 4, 6);

            for (int pass = 0; pass < 200; pass++) {
                NDArray v = m.create(new float[] {1, -2, 0.5f});
                v.setRequiresGradient(true);
                try (NDManager step = m.newSubManager()) {
                    NDArray u = v.mul(3f).div(2f); // 1.5 v
                    u.attach(step);
                    NDArray loss = u.mul(u).sum();
                    JniUtils.backward((PtNDArray) loss, (PtNDArray) m.ones(new Shape()), false, false);
                }
                assertThat(floats(v.getGradient())).containsExactly(4.5f, -9f, 2.25f);
            }
        } finally {
            JniUtils.setGradMode(previous);
        }
    }

    @Test
    void seededRandomnessRepeats() {
        Engine engine = Engine.getEngine("PyTorch");
        engine.setRandomSeed(42);
        float[] first = m.randomNormal(new Shape(8)).toFloatArray();
        float[] next = m.randomNormal(new Shape(8)).toFloatArray();
        engine.setRandomSeed(42);
        assertThat(m.randomNormal(new Shape(8)).toFloatArray()).containsExactly(first);
        assertThat(next).isNotEqualTo(first);

        float[] u = m.randomUniform(2f, 3f, new Shape(4000)).toFloatArray();
        double mean = 0;
        for (float f : u) {
            assertThat(f).isBetween(2f, 3f);
            mean += f / u.length;
        }
        assertThat(mean).isCloseTo(2.5, within(0.05));
        long[] ints = m.randomInteger(5, 9, new Shape(200), DataType.INT64).toLongArray();
        for (long i : ints) {
            assertThat(i).isBetween(5L, 8L);
        }
        assertThat(longs(m.randomPermutation(5).sort())).containsExactly(0, 1, 2, 3, 4);
    }
}
