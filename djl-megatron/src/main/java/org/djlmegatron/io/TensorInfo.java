package org.djlmegatron.io;

import ai.djl.ndarray.types.Shape;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.Objects;

/**
 * Where one tensor lives: its dtype and shape as stored, the file holding it, and the absolute
 * byte range of its data in that file (header already accounted for).
 *
 * @param name the tensor name
 * @param dtype the stored element type
 * @param shape the stored shape; empty for a scalar (copied, never shared)
 * @param file the {@code .safetensors} file holding the data
 * @param dataStart absolute offset of the first data byte in {@code file}
 * @param byteLength number of data bytes, {@code numel() * dtype.elementSize()}
 */
public record TensorInfo(
        String name, SafetensorsDType dtype, long[] shape, Path file, long dataStart, long byteLength) {

    public TensorInfo {
        Objects.requireNonNull(name, "name");
        Objects.requireNonNull(dtype, "dtype");
        Objects.requireNonNull(file, "file");
        shape = shape.clone();
    }

    /** A copy of the stored shape. */
    @Override
    public long[] shape() {
        return shape.clone();
    }

    /** The stored shape as a DJL {@link Shape}. */
    public Shape djlShape() {
        return new Shape(shape);
    }

    /** Number of elements: 1 for a scalar, 0 when any dimension is 0. */
    public long numel() {
        long n = 1;
        for (long d : shape) {
            n *= d; // cannot overflow: the header parser rejected shapes that do
        }
        return n;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof TensorInfo t
                && name.equals(t.name)
                && dtype == t.dtype
                && Arrays.equals(shape, t.shape)
                && file.equals(t.file)
                && dataStart == t.dataStart
                && byteLength == t.byteLength;
    }

    @Override
    public int hashCode() {
        return Objects.hash(name, dtype, Arrays.hashCode(shape), file, dataStart, byteLength);
    }

    @Override
    public String toString() {
        return "TensorInfo[" + name + ", " + dtype.code() + ", " + Arrays.toString(shape) + ", "
                + file + " @" + dataStart + "+" + byteLength + "]";
    }
}
