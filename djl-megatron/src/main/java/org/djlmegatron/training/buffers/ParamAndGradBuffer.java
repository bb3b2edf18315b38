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
 * <p>With 16-bit weights the gradients libtorch produces are 16-bit as well (a {@code .grad} has
 * its parameter's dtype); {@link #accumulateIntoMain()} adds each micro-batch's into the fp32 main
 * gradient, so they accumulate in fp32 over the micro-batches as under Megatron's
 * {@code main_grad} hook. fp32 weights need no second buffer: the main gradient is the gradient
 * buffer itself.
 *
 * <p>Under ZeRO-2 ({@link GradientShard}) the buffer holds no gradients between micro-batches:
 * constructed with {@code persistentGradients = false}, it binds the parameters' gradients to a
 * workspace for one micro-batch ({@link #bindGradients}) and drops them after ({@link #dropGradients}).
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
    private final boolean fp32;
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
        this(params, dpSize, bucketElements, parent, true);
    }

    /**
     * As above; with {@code persistentGradients} false no gradient buffer is kept (ZeRO-2: see
     * {@link #bindGradients}), and {@link #mainGrads()} is null.
     */
    public ParamAndGradBuffer(List<TrainableParameter> params, int dpSize, long bucketElements, NDManager parent,
            boolean persistentGradients) {
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
        fp32 = type == DataType.FLOAT32;
        grads = persistentGradients ? manager.zeros(new Shape(padded), type) : null;
        mainGrads = !persistentGradients ? null : fp32 ? grads : manager.zeros(new Shape(padded), DataType.FLOAT32);
        for (int i = 0; i < params.size(); i++) {
            TorchNative.bindToBuffer(params.get(i).array(), params16or32, offsets[i]);
        }
        if (persistentGradients) {
            bindGradients(grads);
        } else {
            dropGradients(); // a .grad left from an earlier backward would be held for nothing
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

    /** Whether the weights are fp32 (then they are their own masters). */
    public boolean weightsAreFp32() {
        return fp32;
    }

    /** Makes the parameters' gradients views of {@code workspace} (a zeroed vector of {@link #paddedSize()} in the weights' dtype). */
    public void bindGradients(NDArray workspace) {
        for (int i = 0; i < params.size(); i++) {
            TorchNative.bindGradient(params.get(i).array(), workspace, offsets[i]);
        }
    }

    /** Leaves every parameter without a gradient: the workspace they viewed is freed when its owner closes it. */
    public void dropGradients() {
        for (TrainableParameter p : params) {
            TorchNative.dropGradient(p.array());
        }
    }

    /** Bytes of the weights this rank holds (the parameter buffer). */
    public long parameterBytes() {
        return params16or32.getShape().size() * params16or32.getDataType().getNumOfBytes();
    }

    /** Bytes of gradients kept between micro-batches: the gradient buffer and, for 16-bit weights, the fp32 main gradient. */
    public long gradientBytes() {
        if (grads == null) {
            return 0;
        }
        long bytes = grads.getShape().size() * grads.getDataType().getNumOfBytes();
        return mainGrads == grads ? bytes : bytes + mainGrads.getShape().size() * 4;
    }

    /** Bucket ranges {start, end}, in reduction order (the end of the buffer first). */
    public List<long[]> buckets() {
        return buckets;
    }

    /** Zeroes the gradients before a step's first micro-batch (libtorch's {@code zero_()}: inf from an overflow does not linger). */
    public void zeroGradients() {
        if (grads == null) {
            return;
        }
        zero(grads);
        if (mainGrads != grads) {
            zero(mainGrads);
        }
    }

    private static void zero(NDArray a) {
        a.set(new NDIndex("..."), 0f); // a fill, not a - a: inf - inf would leave NaN
    }

    /**
     * After a micro-batch's backward, for 16-bit weights: its
     * gradients, widened, are added into the fp32 main gradient and the 16-bit ones zeroed, so
     * micro-batches accumulate in fp32 (Megatron's {@code main_grad} hook, here per micro-batch
     * rather than per parameter). Nothing for fp32 weights, whose gradient buffer is the main gradient.
     */
    public void accumulateIntoMain() {
        if (mainGrads == grads) { // fp32 weights, or no persistent gradients
            return;
        }
        try (NDArray wide = grads.toType(DataType.FLOAT32, false)) {
            mainGrads.addi(wide);
        }
        zero(grads);
    }

    /**
     * {@link #accumulateIntoMain()} for elements {@code [start, end)} only (the same elementwise
     * arithmetic, so bit-identical): under {@code --overlap-grad-reduce} a bucket of the last
     * micro-batch's 16-bit gradients goes into the main gradient on the communication thread,
     * before its reduction, as soon as its gradients are final. Nothing for fp32 weights.
     */
    public void accumulateIntoMain(long start, long end) {
        if (mainGrads == grads) {
            return;
        }
        NDIndex slice = new NDIndex("{}:{}", start, end);
        try (NDArray g = grads.get(slice); NDArray main = mainGrads.get(slice);
                NDArray wide = g.toType(DataType.FLOAT32, false)) {
            main.addi(wide);
            zero(g);
        }
    }

    /**
     * The element range {start, end} spanning {@code subset}'s parameters in this buffer (under
     * pipelining a model chunk's, which lie back to back); {0, 0} when none is here.
     */
    public long[] rangeOf(List<TrainableParameter> subset) {
        java.util.Set<NDArray> wanted = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());
        subset.forEach(p -> wanted.add(p.array()));
        long start = Long.MAX_VALUE;
        long end = 0;
        for (int i = 0; i < params.size(); i++) {
            if (wanted.contains(params.get(i).array())) {
                start = Math.min(start, offsets[i]);
                end = Math.max(end, offsets[i + 1]);
            }
        }
        return start > end ? new long[] {0, 0} : new long[] {start, end};
    }

    /**
     * A view of {@code p}'s fp32 main gradient, in {@code p}'s shape (writes go into the buffer):
     * under pipelining the tied embedding's gradient is exchanged there once the micro-batches
     * went into the main gradient.
     */
    public NDArray mainGradOf(TrainableParameter p) {
        for (int i = 0; i < params.size(); i++) {
            if (params.get(i).name().equals(p.name())) {
                try (NDArray flat = mainGrads.get(new NDIndex("{}:{}", offsets[i], offsets[i + 1]))) {
                    return flat.reshape(params.get(i).array().getShape());
                }
            }
        }
        throw new IllegalArgumentException("parameter " + p.name() + " is not in this buffer");
    }

    /**
     * Completes over the tensor-parallel group {@code tp} the fp32 main gradients of the
     * parameters flagged {@link TrainableParameter#tpPartialGradient()}, in place (summed, in
     * group-rank order): Megatron's {@code _allreduce_layernorm_grads} on {@code main_grad}, for
     * steps that reduce over data parallelism first. Collective over {@code tp}: every member has
     * the same parameters in the same order.
     */
    public void completeTensorParallel(ProcessGroup tp) {
        if (tp.size() == 1) {
            return;
        }
        for (int i = 0; i < params.size(); i++) {
            if (!params.get(i).tpPartialGradient()) {
                continue;
            }
            try (NDArray view = mainGrads.get(new NDIndex("{}:{}", offsets[i], offsets[i + 1]));
                    NDArray sum = tp.allReduce(view, ReduceOp.SUM)) {
                view.set(new NDIndex("..."), sum); // a copy, not g - g + sum: an inf must stay inf
            }
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
