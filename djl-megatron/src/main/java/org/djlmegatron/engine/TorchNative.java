package org.djlmegatron.engine;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.engine.PtNDManager;

/**
 * The project's own natives, compiled into {@code libdjl_torch.so} next to DJL's JNI contract
 * ({@code djl-megatron/src/main/native}). They exist only when DJL runs on that library
 * ({@code PYTORCH_LIBRARY_PATH} pointing at the directory {@code build-native.sh} lays out);
 * callers ask {@link #isAvailable()} and fall back to composed DJL operations otherwise.
 *
 * <p>Tensors cross as libtorch handles ({@link PtNDArray#getHandle()}); results come back as new
 * handles owned by the first operand's manager. dtype codes are DJL's {@link DataType} ordinals.
 */
public final class TorchNative {

    private static final String VERSION = probe();

    private TorchNative() {}

    /** Whether DJL runs on the project's native library. */
    public static boolean isAvailable() {
        return VERSION != null;
    }

    /** The native library and the libtorch it was built against, or {@code null} when absent. */
    public static String version() {
        return VERSION;
    }

    private static String probe() {
        Engine.getEngine("PyTorch"); // loads libdjl_torch.so (ours or DJL's)
        try {
            return nativeVersion();
        } catch (UnsatisfiedLinkError e) {
            return null; // DJL's stock JNI: none of our natives
        }
    }

    private static void require() {
        if (!isAvailable()) {
            throw new IllegalStateException("the djl-megatron native library is not loaded: DJL runs on its stock "
                    + "JNI; build it with djl-megatron/src/main/native/build-native.sh and set PYTORCH_LIBRARY_PATH");
        }
    }

    private static long handle(NDArray a) {
        return ((PtNDArray) a).getHandle();
    }

    private static NDArray wrap(NDArray like, long handle) {
        return new PtNDArray((PtNDManager) like.getManager(), handle);
    }

    /**
     * Causal or full scaled-dot-product attention, differentiable. {@code q [b, hq, s, d]},
     * {@code k, v [b, hkv, s, d]} with {@code hq % hkv == 0} (grouped-query: each key/value head
     * serves {@code hq / hkv} consecutive query heads). Returns {@code [b, hq, s, d]}. Uses
     * libtorch's fused kernels (flash, memory-efficient) where it has them, the composed math
     * otherwise (libtorch before 2.1), causal self-attention there in blocks of
     * {@link #CAUSAL_BLOCK_ROWS} queries that skip the keys no query of the block sees.
     */
    public static NDArray scaledDotProductAttention(NDArray q, NDArray k, NDArray v, boolean causal, double scale) {
        return scaledDotProductAttention(q, k, v, causal, scale, CAUSAL_BLOCK_ROWS);
    }

    /** Query rows per block of the composed causal self-attention (libtorch before 2.1). */
    public static final int CAUSAL_BLOCK_ROWS = 128;

    /**
     * As {@link #scaledDotProductAttention(NDArray, NDArray, NDArray, boolean, double)} with the
     * composed causal attention's query block size chosen ({@code blockRows} 0: one block, the
     * whole masked square); for tests and {@code bench-attention}.
     */
    public static NDArray scaledDotProductAttention(NDArray q, NDArray k, NDArray v, boolean causal, double scale,
            int blockRows) {
        require();
        if (blockRows < 0) {
            throw new IllegalArgumentException("blockRows must be 0 (no blocks) or positive; found " + blockRows);
        }
        return wrap(q, sdpa(handle(q), handle(k), handle(v), causal, scale, blockRows));
    }

    /**
     * One AdamW step in place, with {@code torch.optim.AdamW}'s single-tensor arithmetic: decay
     * ({@code p *= 1 - lr * wd * decayMask}), moments, bias-corrected update. All five tensors
     * have the same shape and dtype (fp32).
     */
    public static void adamwStep(NDArray param, NDArray grad, NDArray expAvg, NDArray expAvgSq, NDArray decayMask,
            double lr, double beta1, double beta2, double eps, double weightDecay, long step) {
        require();
        adamw(handle(param), handle(grad), handle(expAvg), handle(expAvgSq), handle(decayMask), lr, beta1, beta2,
                eps, weightDecay, step);
    }

    /**
     * Moves the parameter's values into {@code buffer[offset : offset + numel]} and makes the
     * parameter a view of it (PyTorch's {@code p.data = view}): the same handle for DJL and
     * autograd, its storage the buffer's. Buffer: a contiguous vector of the parameter's dtype.
     */
    public static void bindToBuffer(NDArray param, NDArray buffer, long offset) {
        require();
        bindToBuffer(handle(param), handle(buffer), offset);
    }

    /**
     * Makes {@code buffer[offset : offset + numel]} the parameter's {@code .grad}: backward then
     * accumulates into the buffer in place.
     */
    public static void bindGradient(NDArray param, NDArray buffer, long offset) {
        require();
        bindGradient(handle(param), handle(buffer), offset);
    }

    /**
     * Leaves the parameter without a {@code .grad} (PyTorch's {@code p.grad = None}): the storage
     * it viewed is freed once nothing else holds it; the next backward allocates a new one unless
     * {@link #bindGradient} binds it first.
     */
    public static void dropGradient(NDArray param) {
        require();
        dropGradient(handle(param));
    }

    /**
     * Frees ({@code bytes == 0}) or reallocates ({@code bytes} of undefined contents) the storage
     * {@code x} views, in place: every tensor sharing that storage, including the ones autograd saved
     * for backward, sees it (PyTorch FSDP's {@code _free_storage}/{@code _alloc_storage}). Refill it
     * through an alias tensor of that storage so that the parameters' version counters do not move.
     */
    public static void resizeStorage(NDArray x, long bytes) {
        require();
        resizeStorage(handle(x), bytes);
    }

    /** Bytes the storage {@code x} views holds now (0 after {@link #resizeStorage} freed it). */
    public static long storageBytes(NDArray x) {
        require();
        return storageBytes(handle(x));
    }

    /**
     * One pass over an fp32 gradient vector: multiplies it by {@code scale} in place and returns
     * {@code {sum of squares where mask != 0, count of non-finite elements}} (the sum in double, in
     * fixed-size chunks: the same for any thread count).
     */
    public static double[] unscaleAndNorm(NDArray grad, NDArray normMask, double scale) {
        require();
        return unscaleAndNorm(handle(grad), handle(normMask), scale);
    }

    /**
     * AdamW in one pass over contiguous CPU fp32 tensors, in place, with {@link #adamwStep}'s
     * arithmetic bit for bit, the gradient first multiplied by {@code gradScale} (clipping; 1: none).
     */
    public static void adamwInPlace(NDArray param, NDArray grad, NDArray expAvg, NDArray expAvgSq, NDArray decayMask,
            double gradScale, double lr, double beta1, double beta2, double eps, double weightDecay, long step) {
        require();
        adamwInPlace(handle(param), handle(grad), handle(expAvg), handle(expAvgSq), handle(decayMask), gradScale, lr,
                beta1, beta2, eps, weightDecay, step);
    }

    /**
     * GPT-2's tanh GELU, {@code 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))}, as libtorch's
     * fused {@code gelu(x, approximate="tanh")}, differentiable (one kernel each way).
     */
    public static NDArray geluTanh(NDArray x) {
        require();
        return wrap(x, geluTanh(handle(x)));
    }

    /** A cast that autograd sees through (DJL's {@code toType} runs without grad). */
    public static NDArray cast(NDArray x, DataType type) {
        require();
        return x.getDataType() == type ? x : wrap(x, castTo(handle(x), type.ordinal()));
    }

    /** Address of the tensor's first element (a device pointer for CUDA tensors); never read from Java. */
    public static long dataPointer(NDArray x) {
        require();
        return dataPtr(handle(x));
    }

    /** The current CUDA stream of {@code device} (a {@code cudaStream_t}); 0 without CUDA. */
    public static long currentCudaStream(int device) {
        require();
        return cudaCurrentStream(device);
    }

    /** Waits for all work on {@code device}. */
    public static void synchronizeCuda(int device) {
        require();
        cudaSynchronize(device);
    }

    /** Bytes {@code [allocated, reserved, peak allocated, peak reserved]} of libtorch's CUDA allocator on {@code device}. */
    public static long[] cudaMemoryStats(int device) {
        require();
        return cudaMemory(device);
    }

    /** Number of CUDA devices libtorch sees (0 on a CPU build). */
    public static int cudaDeviceCount() {
        require();
        return cudaDevices();
    }

    /** Seeds the generator of one device: {@code device < 0} is the CPU, else that CUDA device. */
    public static void manualSeed(int device, long seed) {
        require();
        seed(device, seed);
    }

    private static native String nativeVersion();

    private static native long sdpa(long q, long k, long v, boolean causal, double scale, int blockRows);

    private static native void adamw(long param, long grad, long expAvg, long expAvgSq, long decayMask, double lr,
            double beta1, double beta2, double eps, double weightDecay, long step);

    private static native void bindToBuffer(long param, long buffer, long offset);

    private static native void bindGradient(long param, long buffer, long offset);

    private static native void dropGradient(long param);

    private static native void resizeStorage(long handle, long bytes);

    private static native long storageBytes(long handle);

    private static native double[] unscaleAndNorm(long grad, long mask, double scale);

    private static native void adamwInPlace(long param, long grad, long expAvg, long expAvgSq, long decayMask,
            double gradScale, double lr, double beta1, double beta2, double eps, double weightDecay, long step);

    private static native long geluTanh(long handle);

    private static native long castTo(long handle, int dtype);

    private static native long dataPtr(long handle);

    private static native long cudaCurrentStream(int device);

    private static native void cudaSynchronize(int device);

    private static native long[] cudaMemory(int device);

    private static native int cudaDevices();

    private static native void seed(int device, long seed);
}
