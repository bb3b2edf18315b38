package org.djlmegatron.bridge.convert;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Objects;
import org.djlmegatron.io.SafetensorsDType;

/**
 * A tensor's bytes in host memory, row-major and little-endian, with its element type and shape:
 * how weights travel through a conversion without ever becoming NDArrays (bf16 included, which
 * the stock DJL engine cannot hold).
 *
 * @param dtype element type
 * @param shape dimensions (copied)
 * @param data {@code numel * dtype.elementSize()} bytes, owned by this tensor
 */
public record HostTensor(SafetensorsDType dtype, long[] shape, byte[] data) {

    public HostTensor {
        Objects.requireNonNull(dtype, "dtype");
        shape = shape.clone();
        long n = 1;
        for (long d : shape) {
            n = Math.multiplyExact(n, d);
        }
        if (data.length != n * dtype.elementSize()) {
            throw new IllegalArgumentException("tensor of " + dtype.code() + " " + Arrays.toString(shape) + " needs "
                    + n * dtype.elementSize() + " bytes, found " + data.length);
        }
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }

    public long numel() {
        return data.length / dtype.elementSize();
    }

    /** The bytes as a little-endian buffer (a view, not a copy). */
    public ByteBuffer buffer() {
        return ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN);
    }

    /** This tensor in another floating-point type ({@code this} when it already is). */
    public HostTensor to(SafetensorsDType target) {
        return target == dtype ? this : new HostTensor(target, shape, FloatCast.convert(data, dtype, target));
    }

    /** The values as float32 (exact for F16 and BF16). */
    public float[] toFloats() {
        byte[] f32 = FloatCast.convert(data, dtype, SafetensorsDType.F32);
        float[] out = new float[f32.length / 4];
        ByteBuffer.wrap(f32).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(out);
        return out;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof HostTensor t && dtype == t.dtype && Arrays.equals(shape, t.shape)
                && Arrays.equals(data, t.data);
    }

    @Override
    public int hashCode() {
        return Objects.hash(dtype, Arrays.hashCode(shape));
    }

    @Override
    public String toString() {
        return "HostTensor[" + dtype.code() + " " + Arrays.toString(shape) + "]";
    }
}
