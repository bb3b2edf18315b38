package org.djlmegatron.io.torch;

import java.util.Arrays;
import java.util.Objects;
import org.djlmegatron.io.SafetensorsDType;

/**
 * A tensor in a torch.save archive, as {@code torch._utils._rebuild_tensor_v2} describes it: a
 * view of a storage with an element offset, a shape and strides (in elements). Holds no data;
 * {@link TorchArchive#readTensor} reads it. For writing, {@link #contiguous} declares a tensor
 * that owns its whole storage.
 *
 * @param storage the storage it views
 * @param offset first element within the storage
 * @param shape dimensions (copied)
 * @param stride element strides per dimension (copied)
 */
public record TorchTensor(TorchStorage storage, long offset, long[] shape, long[] stride) {

    public TorchTensor {
        Objects.requireNonNull(storage, "storage");
        shape = shape.clone();
        stride = stride.clone();
    }

    /** A row-major tensor filling storage {@code key} from its start. */
    public static TorchTensor contiguous(String key, SafetensorsDType dtype, long[] shape) {
        return new TorchTensor(new TorchStorage(key, dtype, numel(shape)), 0, shape, rowMajorStrides(shape));
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }

    @Override
    public long[] stride() {
        return stride.clone();
    }

    public SafetensorsDType dtype() {
        return storage.dtype();
    }

    public long numel() {
        return numel(shape);
    }

    /** Bytes of the tensor's elements (not of its storage). */
    public long byteLength() {
        return numel() * dtype().elementSize();
    }

    /** Whether the elements are laid out row-major without gaps. */
    public boolean isContiguous() {
        long[] expected = rowMajorStrides(shape);
        for (int i = 0; i < shape.length; i++) {
            if (shape[i] > 1 && stride[i] != expected[i]) {
                return false; // a dimension of size 1 may carry any stride
            }
        }
        return true;
    }

    static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) {
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    static long[] rowMajorStrides(long[] shape) {
        long[] s = new long[shape.length];
        long acc = 1;
        for (int i = shape.length - 1; i >= 0; i--) {
            s[i] = acc;
            acc *= shape[i];
        }
        return s;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof TorchTensor t && storage.equals(t.storage) && offset == t.offset
                && Arrays.equals(shape, t.shape) && Arrays.equals(stride, t.stride);
    }

    @Override
    public int hashCode() {
        return Objects.hash(storage, offset, Arrays.hashCode(shape), Arrays.hashCode(stride));
    }

    @Override
    public String toString() {
        return "TorchTensor[" + storage.dtype().code() + " " + Arrays.toString(shape) + " storage " + storage.key()
                + " @" + offset + "]";
    }
}
