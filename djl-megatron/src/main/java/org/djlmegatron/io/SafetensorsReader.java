package org.djlmegatron.io;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * Reads safetensors checkpoints, single-file or sharded, through memory mappings, so neither the
 * file size nor a tensor's offset is limited to 2 GB.
 *
 * <p>Every header (and the shard index) is validated completely when the reader is opened;
 * tensor data is read only on {@link #load} / {@link #loadSlice}, each call copying exactly the
 * bytes it needs into a fresh native-order direct buffer. One DJL array is limited to 2^31-1
 * bytes by DJL's buffer API; larger tensors can still be read in pieces with {@link #loadSlice}.
 *
 * <p>Loads are thread-safe. All failures are {@link SafetensorsException}s (unchecked); asking
 * for a tensor that is not there, or for an invalid slice, is an {@link IllegalArgumentException}.
 */
public final class SafetensorsReader implements AutoCloseable {

    /** The single-file checkpoint name inside a model directory. */
    public static final String MODEL_FILE = CheckpointFiles.MODEL_FILE;

    private static final long MAX_ARRAY_BYTES = Integer.MAX_VALUE;

    private final Path source;
    private final Map<String, TensorInfo> tensors;
    private final Map<Path, MappedFile> files;
    private final Map<String, String> metadata;
    private volatile boolean closed;

    private SafetensorsReader(CheckpointFiles checkpoint) {
        this.source = checkpoint.source();
        this.tensors = Collections.unmodifiableMap(new TreeMap<>(checkpoint.tensors()));
        this.files = checkpoint.files();
        this.metadata = Collections.unmodifiableMap(checkpoint.metadata());
    }

    /**
     * Opens a checkpoint and validates all of its headers.
     *
     * @param path a {@code .safetensors} file; a {@code *.index.json} shard index; or a directory
     *     holding {@code model.safetensors} or, failing that, {@code model.safetensors.index.json}
     *     (the order Hugging Face transformers looks for them in)
     * @throws SafetensorsException when a file is missing, unreadable or malformed
     */
    public static SafetensorsReader open(Path path) {
        return open(path, MappedFile.DEFAULT_WINDOW);
    }

    /** As {@link #open(Path)}, with a custom mapping window size (tests use tiny ones). */
    static SafetensorsReader open(Path path, long windowSize) {
        ElementCopier.requireLittleEndianHost();
        return new SafetensorsReader(CheckpointFiles.open(path, windowSize));
    }

    /** The file or index this reader was opened on. */
    public Path source() {
        return source;
    }

    /**
     * Tensor names in lexicographic order (the same for a single file and its sharded form). For
     * a sharded checkpoint these are the index's {@code weight_map} keys; tensors a shard holds
     * but the index does not name are not visible.
     */
    public Set<String> keys() {
        return tensors.keySet();
    }

    /** Whether the checkpoint has a tensor of this name. */
    public boolean contains(String name) {
        return tensors.containsKey(name);
    }

    /**
     * Where and how a tensor is stored.
     *
     * @throws IllegalArgumentException when there is no such tensor
     */
    public TensorInfo info(String name) {
        TensorInfo t = tensors.get(name);
        if (t == null) {
            throw new IllegalArgumentException(source + ": no tensor '" + name + "' (checkpoint has "
                    + tensors.size() + " tensors)");
        }
        return t;
    }

    /**
     * The header's {@code __metadata__}. For a sharded checkpoint: every shard's {@code
     * __metadata__}, then the index's {@code metadata} on top (values rendered as strings).
     */
    public Map<String, String> metadata() {
        return metadata;
    }

    /**
     * Loads a whole tensor as {@link SafetensorsDType#loadType()} (BF16 arrives as FLOAT32, I16
     * as INT32).
     */
    public NDArray load(NDManager manager, String name) {
        TensorInfo t = info(name);
        long[] shape = t.shape();
        return toNDArray(manager, t, readRuns(t, shape, 0, 1, t.numel(), 0), shape);
    }

    /**
     * Loads {@code [start, start + length)} along {@code axis}, reading only those bytes: one
     * contiguous run for axis 0, one run per index of the leading axes otherwise. This is how a
     * tensor-parallel rank reads only its shard.
     *
     * @throws IllegalArgumentException when the axis or range does not fit the tensor's shape
     */
    public NDArray loadSlice(NDManager manager, String name, int axis, long start, long length) {
        TensorInfo t = info(name);
        long[] shape = t.shape();
        if (axis < 0 || axis >= shape.length) {
            throw new IllegalArgumentException(source + ": tensor '" + name + "' has rank " + shape.length
                    + ", axis " + axis + " is out of range");
        }
        if (start < 0 || length < 0 || start > shape[axis] - length) {
            throw new IllegalArgumentException(source + ": tensor '" + name + "' axis " + axis + " has size "
                    + shape[axis] + ", slice [" + start + ", " + (start + length) + ") is out of range");
        }
        long outer = product(shape, 0, axis);
        long inner = product(shape, axis + 1, shape.length);
        long stride = shape[axis] * inner;
        long[] outShape = shape.clone();
        outShape[axis] = length;
        ByteBuffer data = length == shape[axis]
                ? readRuns(t, outShape, 0, 1, t.numel(), 0)
                : readRuns(t, outShape, start * inner, outer, length * inner, stride);
        return toNDArray(manager, t, data, outShape);
    }

    /** Reads a F32, F16 or BF16 tensor into a float array (F16 and BF16 converted exactly). */
    public float[] loadFloats(String name) {
        TensorInfo t = info(name);
        checkJavaArraySize(t);
        SafetensorsDType d = t.dtype();
        if (d != SafetensorsDType.F32 && d != SafetensorsDType.F16 && d != SafetensorsDType.BF16) {
            throw new IllegalArgumentException(source + ": tensor '" + name + "' is " + d.code()
                    + ", loadFloats reads F32, F16 and BF16");
        }
        ByteBuffer data = readRuns(t, t.shape(), 0, 1, t.numel(), 0);
        float[] out = new float[(int) t.numel()];
        if (d == SafetensorsDType.F16) {
            for (int i = 0; i < out.length; i++) {
                out[i] = HalfFloats.halfToFloat(data.getShort(2 * i));
            }
        } else {
            data.asFloatBuffer().get(out); // BF16 arrives widened
        }
        return out;
    }

    /** Reads an integer tensor (I64, I32, I16, I8, U8 unsigned, BOOL as 0/1) into a long array. */
    public long[] loadLongs(String name) {
        TensorInfo t = info(name);
        checkJavaArraySize(t);
        SafetensorsDType d = t.dtype();
        if (d == SafetensorsDType.F64 || d == SafetensorsDType.F32 || d == SafetensorsDType.F16
                || d == SafetensorsDType.BF16) {
            throw new IllegalArgumentException(source + ": tensor '" + name + "' is " + d.code()
                    + ", loadLongs reads I64, I32, I16, I8, U8 and BOOL");
        }
        ByteBuffer data = readRuns(t, t.shape(), 0, 1, t.numel(), 0);
        long[] out = new long[(int) t.numel()];
        for (int i = 0; i < out.length; i++) {
            out[i] = switch (d) {
                case I64 -> data.getLong(8 * i);
                case I32, I16 -> data.getInt(4 * i); // I16 arrives widened
                case I8 -> data.get(i);
                default -> data.get(i) & 0xFF; // U8, BOOL
            };
        }
        return out;
    }

    /**
     * Copies {@code runs} runs of {@code runElements} stored elements, the r-th starting at element
     * {@code firstElement + r * stride}, into a native-order direct buffer in the load type.
     */
    private ByteBuffer readRuns(
            TensorInfo t, long[] outShape, long firstElement, long runs, long runElements, long stride) {
        if (closed) {
            throw new IllegalStateException(source + ": reader is closed");
        }
        long outBytes = product(outShape, 0, outShape.length) * t.dtype().loadType().getNumOfBytes();
        if (outBytes > MAX_ARRAY_BYTES) {
            throw new SafetensorsException(t.file() + ": tensor '" + t.name() + "' needs " + outBytes
                    + " bytes as " + t.dtype().loadType() + ", more than one DJL array holds (2^31-1);"
                    + " read it in pieces with loadSlice");
        }
        ByteBuffer dst = ByteBuffer.allocateDirect((int) outBytes).order(ByteOrder.nativeOrder());
        if (outBytes == 0) {
            return dst;
        }
        int elementSize = t.dtype().elementSize();
        ElementCopier copier = new ElementCopier(files.get(t.file()), t.dtype());
        try {
            for (long r = 0; r < runs; r++) {
                long element = firstElement + r * stride;
                copier.copy(t.dataStart() + element * elementSize, runElements, dst);
            }
        } catch (IOException e) {
            throw new SafetensorsException(t.file() + ": reading tensor '" + t.name() + "' failed: " + e, e);
        }
        return dst.rewind();
    }

    private static NDArray toNDArray(NDManager manager, TensorInfo t, ByteBuffer data, long[] shape) {
        // DJL would take the direct buffer itself as the tensor's storage (torch::from_blob). Such
        // tensors, used as trainable parameters, were seen corrupted at random (NaNs after a few
        // backward passes) even with the buffer strongly held; a libtorch-owned copy never was.
        try (NDArray view = manager.create(data, new Shape(shape), t.dtype().loadType())) {
            return view.duplicate();
        }
    }

    private void checkJavaArraySize(TensorInfo t) {
        if (t.numel() > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException(source + ": tensor '" + t.name() + "' has " + t.numel()
                    + " elements, too many for a Java array");
        }
    }

    private static long product(long[] shape, int from, int to) {
        long p = 1;
        for (int i = from; i < to; i++) {
            p *= shape[i];
        }
        return p;
    }

    /** Closes all files. Arrays already loaded are copies and stay valid. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        List<IOException> failures = new ArrayList<>();
        for (MappedFile f : files.values()) {
            try {
                f.close();
            } catch (IOException e) {
                failures.add(e);
            }
        }
        if (!failures.isEmpty()) {
            SafetensorsException e = new SafetensorsException(source + ": closing failed", failures.get(0));
            failures.stream().skip(1).forEach(e::addSuppressed);
            throw e;
        }
    }
}
