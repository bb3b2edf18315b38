package org.djlmegatron.training.buffers;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Predicate;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.engine.TorchNative;
import org.djlmegatron.training.model.TrainableParameter;

/**
 * Megatron's {@code param_and_grad_buffer} for one reduction group: the parameters are views into
 * one contiguous buffer of their dtype, their {@code .grad}s views into a gradient buffer of the
 * same dtype, so backward accumulates every micro-batch's gradients in place and the data-parallel
 * reduction, the norm and the optimizer run over whole buffers: no per-step concatenation, no
 * write-back of fp32 weights (the optimizer updates them where they are).
 *
 * <p>Layout: parameters in model order (the order of the flat optimizer state that checkpoints
 * hold), padded to a multiple of the data-parallel size. Buckets of about {@code bucketElements}
 * are cut from the end backwards: backward produces the last parameters' gradients first, so
 * bucket 0 is the first whose gradients are final.
 *
 * <p>With 16-bit weights the gradients libtorch accumulates are 16-bit as well (a {@code .grad}
 * has its parameter's dtype) and accumulate in 16 bits over the micro-batches, as before this
 * buffer; {@link #gradientsToMain()} casts them once per step into the fp32 main gradient
 * (Megatron adds each micro-batch into {@code main_grad} with a hook: not done here yet). fp32
 * weights need no second buffer: the main gradient is the gradient buffer itself.
 *
 * <p>Needs the project's native library ({@link TorchNative#bindToBuffer}); see {@link #supports}.
 */
public final class ParamAndGradBuffer implements AutoCloseable {

    private final List<TrainableParameter> params;
    private final long[] offsets;
    private final long size;
    private final long padded;
    private final NDManager manager;
    private final NDArray params16or32;
    private final NDArray grads;
    private final NDArray mainGrads;
    /** {start, end} element ranges of the buckets, bucket 0 at the end of the buffer. */
    private final List<long[]> buckets;

    /** Whether these parameters can live in one buffer here: the native library, one dtype and device, fp32/bf16/fp16. */
    public static boolean supports(List<TrainableParameter> params) {
        if (!TorchNative.isAvailable() || params.isEmpty()) {
            return false;
        }
        NDArray first = params.get(0).array();
        DataType t = first.getDataType();
        if (t != DataType.FLOAT32 && t != DataType.BFLOAT16 && t != DataType.FLOAT16) {
            return false;
        }
        return params.stream().allMatch(p -> p.array().getDataType() == t && p.array().getDevice().equals(first.getDevice()));
    }

    /**
     * Moves the parameters' values into a new buffer (the parameters become views of it) and
     * binds their gradients to a gradient buffer.
     *
     * @param dpSize the reduction group's size (the buffer is padded to a multiple of it)
     * @param bucketElements elements per reduction bucket ({@code --ddp-bucket-size})
     */
    public ParamAndGradBuffer(List<TrainableParameter> params, int dpSize, long bucketElements, NDManager parent) {
        if (!supports(params)) {
            throw new IllegalArgumentException("parameters need the native library and one dtype (fp32, bf16 or fp16) "
                    + "and device for a contiguous buffer");
        }
        if (bucketElements < 1) {
            throw new IllegalArgumentException("--ddp-bucket-size: expected a positive integer, found " + bucketElements);
        }
        this.params = List.copyOf(params);
        offsets = new long[params.size() + 1]; // one per parameter, not per element
        for (int i = 0; i < params.size(); i++) {
            offsets[i + 1] = offsets[i] + params.get(i).array().getShape().size();
        }
        size = offsets[params.size()];
        padded = (size + dpSize - 1) / dpSize * dpSize;
        manager = parent.newSubManager(params.get(0).array().getDevice());
        DataType type = params.get(0).array().getDataType();
        params16or32 = manager.zeros(new Shape(padded), type);
        grads = manager.zeros(new Shape(padded), type);
        mainGrads = type == DataType.FLOAT32 ? grads : manager.zeros(new Shape(padded), DataType.FLOAT32);
        for (int i = 0; i < params.size(); i++) {
            NDArray p = params.get(i).array();
            TorchNative.bindToBuffer(p, params16or32, offsets[i]);
            TorchNative.bindGradient(p, grads, offsets[i]);
        }
        buckets = cutBuckets(padded, bucketElements);
    }

    private static List<long[]> cutBuckets(long padded, long bucketElements) {
        List<long[]> out = new ArrayList<>();
        for (long end = padded; end > 0; end -= bucketElements) {
            out.add(new long[] {Math.max(0, end - bucketElements), end});
        }
        return out;
    }

    public List<TrainableParameter> parameters() {
        return params;
    }

    /** Elements of real parameters. */
    public long size() {
        return size;
    }

    /** Length of every buffer: {@link #size()} rounded up to a multiple of the reduction group's size. */
    public long paddedSize() {
        return padded;
    }

    /** The parameter buffer (the weights themselves, in their dtype). */
    public NDArray params() {
        return params16or32;
    }

    /** The fp32 main gradients (the gradient buffer itself for fp32 weights). */
    public NDArray mainGrads() {
        return mainGrads;
    }

    /** The gradient buffer in the weights' dtype (the {@code .grad}s are views of it; the main gradient itself for fp32). */
    public NDArray gradients() {
        return grads;
    }

    /** Whether the weights are fp32 (then they are their own masters). */
    public boolean weightsAreFp32() {
        return mainGrads == grads;
    }

    /** Bucket ranges {start, end}, in reduction order (the end of the buffer first). */
    public List<long[]> buckets() {
        return buckets;
    }

    /** Zeroes the gradients before a step's first micro-batch (libtorch's {@code zero_()}: inf from an overflow does not linger). */
    public void zeroGradients() {
        zero(grads);
        if (mainGrads != grads) {
            zero(mainGrads);
        }
    }

    private static void zero(NDArray a) {
        a.set(new NDIndex("..."), 0f); // a fill, not a - a: inf - inf would leave NaN
    }

    /**
     * After the last micro-batch's backward (and the tensor-parallel completion of the
     * gradients): 16-bit gradients cast into the fp32 main gradient; nothing for fp32 weights.
     */
    public void gradientsToMain() {
        if (mainGrads == grads) {
            return;
        }
        try (NDArray wide = grads.toType(DataType.FLOAT32, false)) {
            mainGrads.set(new NDIndex("..."), wide);
        }
    }

    /** Copies fp32 values (all of the buffer's length) into the parameters, cast to their dtype; none for fp32 masters that are the weights. */
    public void setParams(NDArray values) {
        if (values == params16or32) {
            return;
        }
        try (NDArray typed = values.toType(params16or32.getDataType(), true)) {
            params16or32.set(new NDIndex("..."), typed);
        }
    }

    /** Sums the main gradients over {@code group} bucket by bucket, in place, then divides by {@code divisor}. */
    public void allReduce(ProcessGroup group, int divisor) {
        for (long[] b : buckets) {
            try (NDArray view = mainGrads.get(new NDIndex("{}:{}", b[0], b[1]));
                    NDArray sum = group.allReduce(view, ReduceOp.SUM)) {
                sum.divi(divisor);
                view.set(new NDIndex("..."), sum);
            }
        }
    }

    /** This rank's shard of the main gradients summed over {@code group} and divided by {@code divisor} (a new array). */
    public NDArray reduceScatter(ProcessGroup group, int divisor) {
        return group.reduceScatter(mainGrads, 0, ReduceOp.SUM).divi(divisor);
    }

    /** Per-element 1/0 fp32 vector from a per-parameter predicate, built on the device (no array sized by the model in Java). */
    public NDArray mask(NDManager m, Predicate<TrainableParameter> which) {
        NDArray v = m.zeros(new Shape(padded), DataType.FLOAT32);
        for (int i = 0; i < params.size(); i++) {
            if (which.test(params.get(i)) && offsets[i + 1] > offsets[i]) {
                v.set(new NDIndex("{}:{}", offsets[i], offsets[i + 1]), 1f);
            }
        }
        return v;
    }

    @Override
    public void close() {
        manager.close();
    }
}
