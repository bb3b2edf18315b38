package org.djlmegatron.training.buffers;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import java.time.Duration;
import java.util.List;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ThreadProcessGroup;
import org.djlmegatron.engine.TorchNative;
import org.djlmegatron.optim.FlatAdamW;
import org.djlmegatron.training.model.TrainableParameter;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * Expert parallelism's two buffers on one rank: the dense and the expert parameters are views of
 * their own buffer (in model order within each), backward accumulates into the matching gradient
 * buffer, and the optimizer's vector is the dense part followed by the expert part (the flat
 * step's order), written back into both buffers.
 */
@Tag("native")
class ExpertBuffersTest {

    private NDManager m;
    private boolean gradMode;

    @BeforeEach
    void open() {
        m = NDManager.newBaseManager();
        gradMode = JniUtils.isGradMode();
        JniUtils.setGradMode(true);
    }

    @AfterEach
    void close() {
        JniUtils.setGradMode(gradMode);
        m.close();
    }

    private NDArray param(float... v) {
        NDArray a = m.create(v).duplicate();
        a.setRequiresGradient(true);
        return a;
    }

    @Test
    void parametersAreViewsOfTheirGroupsBufferAndTheOptimizerSeesDenseThenExperts() {
        NDArray dense1 = param(1, 2, 3);
        NDArray expert = param(10, 20);
        NDArray dense2 = param(4);
        List<TrainableParameter> params = List.of(new TrainableParameter("d1", dense1, false, true),
                new TrainableParameter("e", expert, false, true, true), new TrainableParameter("d2", dense2, false, false));
        ProcessGroup one = ThreadProcessGroup.newGroup("dp", new int[] {0}, Duration.ofSeconds(60)).get(0);
        try (ExpertBuffers b = new ExpertBuffers(params, one, one, 100, false, false, m)) {
            // views: the parameters' storage is the buffers' (dense: d1 then d2; experts: e)
            long dense = TorchNative.dataPointer(b.dense().params());
            assertThat(TorchNative.dataPointer(dense1)).isEqualTo(dense);
            assertThat(TorchNative.dataPointer(dense2)).isEqualTo(dense + 3 * 4);
            assertThat(TorchNative.dataPointer(expert)).isEqualTo(TorchNative.dataPointer(b.experts().params()));

            NDArray y = dense1.sum().add(expert.mul(2).sum()).add(dense2.mul(3).sum());
            JniUtils.backward((PtNDArray) y, (PtNDArray) m.ones(new Shape()), false, false);
            assertThat(b.dense().mainGrads().toFloatArray()).containsExactly(1, 1, 1, 3);
            assertThat(b.experts().mainGrads().toFloatArray()).containsExactly(2, 2);
            try (NDManager s = m.newSubManager()) {
                b.reduceGradients(false);
                assertThat(b.joinReducedGradients(s).toFloatArray()).containsExactly(1, 1, 1, 3, 2, 2);
                NDArray masters = b.masters(s);
                assertThat(masters.toFloatArray()).containsExactly(1, 2, 3, 4, 10, 20);
                assertThat(b.mask(s, TrainableParameter::weightDecay, p -> false).toFloatArray())
                        .containsExactly(1, 1, 1, 0, 0, 0);
                masters.set(new NDIndex("..."), m.create(new float[] {-1, -2, -3, -4, -10, -20}));
                b.writeBack(masters);
            }
            assertThat(dense1.toFloatArray()).containsExactly(-1, -2, -3);
            assertThat(dense2.toFloatArray()).containsExactly(-4);
            assertThat(expert.toFloatArray()).containsExactly(-10, -20);
            b.zeroGradients();
            assertThat(expert.getGradient().toType(DataType.FLOAT32, false).toFloatArray()).containsOnly(0f);
        }
    }

    /**
     * fp32 weights are their own masters: the optimizer's range is the dense buffer then the expert
     * buffer, updated where they are (AdamW on each part with its slice of the moments), and the
     * result is AdamW's on the joined vector, bit for bit.
     */
    @Test
    void fp32WeightsAreTheirOwnMastersUpdatedInPlace() {
        NDArray dense1 = param(1, 2, 3);
        NDArray expert = param(10, 20);
        List<TrainableParameter> params = List.of(new TrainableParameter("d1", dense1, false, true),
                new TrainableParameter("e", expert, false, true, true));
        ProcessGroup one = ThreadProcessGroup.newGroup("dp", new int[] {0}, Duration.ofSeconds(60)).get(0);
        try (ExpertBuffers b = new ExpertBuffers(params, one, one, 100, false, false, m)) {
            List<NDArray> parts = b.weightShards(m);
            assertThat(TorchNative.dataPointer(parts.get(0))).isEqualTo(TorchNative.dataPointer(dense1));
            assertThat(TorchNative.dataPointer(parts.get(1))).isEqualTo(TorchNative.dataPointer(expert));
            NDArray joined = m.create(new float[] {1, 2, 3, 10, 20});
            NDArray grads = m.create(new float[] {0.5f, -1, 2, 3, -0.25f});
            NDArray mask = m.create(new float[] {1, 1, 1, 0, 1});
            FlatAdamW inPlace = new FlatAdamW(0.9, 0.95, 1e-8, 0.1);
            FlatAdamW reference = new FlatAdamW(0.9, 0.95, 1e-8, 0.1);
            for (int step = 1; step <= 3; step++) {
                inPlace.step(parts, grads, mask, 0.5, 1e-2, step);
                reference.step(joined, grads, mask, 0.5, 1e-2, step);
            }
            float[] expected = joined.toFloatArray();
            assertThat(dense1.toFloatArray()).containsExactly(expected[0], expected[1], expected[2]);
            assertThat(expert.toFloatArray()).containsExactly(expected[3], expected[4]);
            assertThat(inPlace.state().get("exp_avg_sq").toFloatArray())
                    .containsExactly(reference.state().get("exp_avg_sq").toFloatArray());
        }
    }
}
