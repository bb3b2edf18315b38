package org.djlmegatron.io;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * Copies runs of stored elements from a {@link MappedFile} into a native-order buffer, widening
 * BF16 to FLOAT32 bits and I16 to INT32 on the way. Not thread-safe (owns a scratch buffer); make
 * one per load.
 */
final class ElementCopier {

    /** Widened types are converted through this much scratch at a time. */
    private static final int SCRATCH_BYTES = 1 << 16;

    private final MappedFile file;
    private final SafetensorsDType dtype;
    private ByteBuffer scratch;

    ElementCopier(MappedFile file, SafetensorsDType dtype) {
        this.file = file;
        this.dtype = dtype;
    }

    /** Safetensors data is little-endian and bulk copies assume the host is too. */
    static void requireLittleEndianHost() {
        if (ByteOrder.nativeOrder() != ByteOrder.LITTLE_ENDIAN) {
            throw new UnsupportedOperationException("safetensors I/O needs a little-endian host, found "
                    + ByteOrder.nativeOrder());
        }
    }

    /**
     * Copies {@code elements} stored elements starting at absolute file offset {@code offset},
     * writing {@code elements * dtype.loadType().getNumOfBytes()} bytes at {@code dst}'s position.
     */
    void copy(long offset, long elements, ByteBuffer dst) throws IOException {
        if (!dtype.isWidened()) {
            int n = Math.toIntExact(elements * dtype.elementSize());
            file.read(offset, dst.slice(dst.position(), n));
            dst.position(dst.position() + n);
            return;
        }
        if (scratch == null) {
            scratch = ByteBuffer.allocate(SCRATCH_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        }
        long remainingBytes = elements * dtype.elementSize();
        long pos = offset;
        while (remainingBytes > 0) {
            int n = (int) Math.min(SCRATCH_BYTES, remainingBytes);
            scratch.clear().limit(n);
            file.read(pos, scratch);
            scratch.flip();
            widen(scratch, dst);
            pos += n;
            remainingBytes -= n;
        }
    }

    private void widen(ByteBuffer src, ByteBuffer dst) {
        switch (dtype) {
            // bfloat16 is the top half of a float32: shifting the bits back is exact.
            case BF16 -> {
                while (src.hasRemaining()) {
                    dst.putInt((src.getShort() & 0xFFFF) << 16);
                }
            }
            case I16 -> {
                while (src.hasRemaining()) {
                    dst.putInt(src.getShort());
                }
            }
            default -> throw new IllegalStateException("not a widened dtype: " + dtype);
        }
    }
}
