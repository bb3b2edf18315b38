package org.djlmegatron.training;

import org.djlmegatron.training.model.TrainableParameter;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import java.util.List;

/**
 * A rank's parameters laid end to end in one fp32 vector (Megatron's param/grad buffers), padded
 * to a multiple of the data-parallel size so every DP rank owns an equal contiguous shard.
 * Gradients are gathered into it, and updated values are written back from it, in parameter order.
 */
public final class FlatLayout {

    private final List<TrainableParameter> params;
    private final long[] offsets;
    private final long size;
    private final long padded;

    public FlatLayout(List<TrainableParameter> params, int dpSize) {
        this.params = List.copyOf(params);
        offsets = new long[params.size() + 1];
        for (int i = 0; i < params.size(); i++) {
            offsets[i + 1] = offsets[i] + params.get(i).array().getShape().size();
        }
        size = offsets[params.size()];
        padded = (size + dpSize - 1) / dpSize * dpSize;
    }

    public List<TrainableParameter> parameters() {
        return params;
    }

    /** Elements of real parameters. */
    public long size() {
        return size;
    }

    /** Length of every flat vector: {@link #size()} rounded up to a multiple of the DP size. */
    public long paddedSize() {
        return padded;
    }

    /** The parameters' current values, flattened (fp32, padded with zeros). */
    public NDArray values(NDManager m) {
        return concat(m, true);
    }

    /** The parameters' gradients, flattened (fp32, padded with zeros; zeros where no gradient). */
    public NDArray gradients(NDManager m) {
        return concat(m, false);
    }

    /** Per-element 1/0 vector from a per-parameter predicate. */
    public NDArray mask(NDManager m, java.util.function.Predicate<TrainableParameter> which) {
        float[] v = new float[Math.toIntExact(padded)];
        for (int i = 0; i < params.size(); i++) {
            if (which.test(params.get(i))) {
                java.util.Arrays.fill(v, (int) offsets[i], (int) offsets[i + 1], 1f);
            }
        }
        return m.create(v).duplicate(); // owns its memory (create(float[]) points into a Java buffer)
    }

    /** Overwrites every parameter in place with its range of {@code flat}, cast to its dtype. */
    public void writeBack(NDArray flat) {
        boolean gradMode = JniUtils.isGradMode();
        JniUtils.setGradMode(false);
        try {
            for (int i = 0; i < params.size(); i++) {
                NDArray target = params.get(i).array();
                try (NDArray piece = flat.get(new NDIndex("{}:{}", offsets[i], offsets[i + 1]));
                        NDArray shaped = piece.reshape(target.getShape());
                        NDArray typed = shaped.toType(target.getDataType(), true)) {
                    target.set(new NDIndex("..."), typed);
                }
            }
        } finally {
            JniUtils.setGradMode(gradMode);
        }
    }

    /**
     * Zeroes every parameter's accumulated gradient. With libtorch's {@code zero_()}, not
     * {@code g - g}: after an fp16 overflow a gradient holds inf, and inf - inf would leave NaN
     * behind, so every later step would be skipped as well.
     */
    public void zeroGradients() {
        for (TrainableParameter p : params) {
            if (p.array().hasGradient()) {
                JniUtils.zeroGrad((PtNDArray) p.array());
            }
        }
    }

    private NDArray concat(NDManager m, boolean values) {
        NDList pieces = new NDList(params.size() + 1);
        try (NDManager tmp = m.newSubManager()) {
            for (TrainableParameter p : params) {
                NDArray a = p.array();
                NDArray src = values ? a.stopGradient() : a.getGradient();
                src.attach(tmp);
                pieces.add(src.toType(DataType.FLOAT32, false).reshape(-1));
            }
            if (padded > size) {
                pieces.add(tmp.zeros(new Shape(padded - size), DataType.FLOAT32));
            }
            NDArray flat = NDArrays.concat(pieces);
            flat.attach(m);
            return flat;
        }
    }
}
