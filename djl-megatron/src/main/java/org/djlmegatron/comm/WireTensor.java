package org.djlmegatron.comm;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * An array's dtype, shape and contiguous bytes (native byte order, as torch stores them): a
 * collective's piece or a point-to-point message on its way between JVMs.
 */
record WireTensor(DataType type, Shape shape, byte[] data) {

    /** The largest piece one frame carries: a Java array's limit. */
    static final long MAX_BYTES = Integer.MAX_VALUE - 8;

    /** Copies {@code x}'s values (a contiguous copy, whatever x's strides). */
    static WireTensor of(NDArray x) {
        long bytes = x.getShape().size() * x.getDataType().getNumOfBytes();
        if (bytes > MAX_BYTES) {
            throw new IllegalArgumentException("cannot send " + Collective.describe(x) + " between JVMs: "
                    + bytes + " bytes is more than one frame holds (" + MAX_BYTES + "); split it");
        }
        // toByteBuffer(false) copies to a Java array (contiguous); the direct variant would leave
        // a contiguous copy of a strided x in x's manager
        byte[] data = x.toByteBuffer(false).array();
        if (data.length != bytes) {
            throw new IllegalStateException("expected " + bytes + " bytes for " + Collective.describe(x)
                    + ", got " + data.length);
        }
        return new WireTensor(x.getDataType(), x.getShape(), data);
    }

    /** A new array on {@code manager} holding these values. */
    NDArray toArray(NDManager manager) {
        return manager.create(ByteBuffer.wrap(data).order(ByteOrder.nativeOrder()), shape, type);
    }

    /** E.g. {@code "float32 (2, 2)"}, as {@link Collective#describe}. */
    String describe() {
        return type + " " + shape;
    }

    void write(DataOutputStream out) throws IOException {
        Frame.writeString(out, type.name());
        long[] dims = shape.getShape();
        out.writeInt(dims.length);
        for (long d : dims) {
            out.writeLong(d);
        }
        out.writeInt(data.length);
        out.write(data);
    }

    static WireTensor read(DataInputStream in) throws IOException {
        String typeName = Frame.readString(in);
        DataType type;
        try {
            type = DataType.valueOf(typeName);
        } catch (IllegalArgumentException e) {
            throw new IOException("unknown dtype " + typeName + " in a frame");
        }
        int rank = in.readInt();
        if (rank < 0 || rank > 64) {
            throw new IOException("corrupt frame: tensor of rank " + rank);
        }
        long[] dims = new long[rank];
        long elements = 1;
        for (int i = 0; i < rank; i++) {
            dims[i] = in.readLong();
            if (dims[i] < 0) {
                throw new IOException("corrupt frame: negative dimension " + dims[i]);
            }
            elements *= dims[i];
        }
        int length = in.readInt();
        if (length != elements * type.getNumOfBytes()) {
            throw new IOException("corrupt frame: " + length + " bytes for " + type + " " + new Shape(dims));
        }
        byte[] data = new byte[length];
        in.readFully(data);
        return new WireTensor(type, new Shape(dims), data);
    }
}
