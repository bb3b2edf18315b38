package org.djlmegatron.data;

import java.io.IOException;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * A read-only file mapped into memory, read with little-endian absolute {@code long} offsets.
 *
 * <p>A {@link MappedByteBuffer} stops at 2 GB, so the file is mapped as consecutive windows of
 * {@code 2^windowBits} bytes. Each window maps 8 bytes past its end, so any primitive that starts
 * in a window lies wholly inside it and no read is ever split. Nothing is copied to the heap;
 * the page cache serves every read. Safe for concurrent readers (absolute reads only).
 */
final class MappedBytes implements AutoCloseable {

    /** 1 GiB windows: few mappings for any dataset, far below the 2 GB limit. */
    static final int DEFAULT_WINDOW_BITS = 30;

    private static final int OVERLAP = Long.BYTES;

    private final Path path;
    private final long size;
    private final int windowBits;
    private final long windowMask;
    private MappedByteBuffer[] windows;

    private MappedBytes(Path path, long size, int windowBits, MappedByteBuffer[] windows) {
        this.path = path;
        this.size = size;
        this.windowBits = windowBits;
        this.windowMask = (1L << windowBits) - 1;
        this.windows = windows;
    }

    /** Maps all of {@code path}; small {@code windowBits} exist for tests of window edges. */
    static MappedBytes map(Path path, int windowBits) throws IOException {
        if (windowBits < 4 || windowBits > DEFAULT_WINDOW_BITS) {
            throw new IllegalArgumentException("windowBits must be in [4, 30], found " + windowBits);
        }
        try (FileChannel channel = FileChannel.open(path, StandardOpenOption.READ)) {
            long size = channel.size();
            long window = 1L << windowBits;
            int count = Math.toIntExact((size + window - 1) >>> windowBits);
            MappedByteBuffer[] windows = new MappedByteBuffer[count];
            for (int i = 0; i < count; i++) {
                long start = (long) i << windowBits;
                MappedByteBuffer w = channel.map(FileChannel.MapMode.READ_ONLY, start,
                        Math.min(window + OVERLAP, size - start));
                w.order(ByteOrder.LITTLE_ENDIAN);
                windows[i] = w;
            }
            // A mapping outlives its channel, so nothing stays open.
            return new MappedBytes(path, size, windowBits, windows);
        }
    }

    static MappedBytes map(Path path) throws IOException {
        return map(path, DEFAULT_WINDOW_BITS);
    }

    Path path() {
        return path;
    }

    long size() {
        return size;
    }

    byte getByte(long pos) {
        return window(pos, 1).get(inWindow(pos));
    }

    short getShort(long pos) {
        return window(pos, 2).getShort(inWindow(pos));
    }

    int getInt(long pos) {
        return window(pos, 4).getInt(inWindow(pos));
    }

    long getLong(long pos) {
        return window(pos, 8).getLong(inWindow(pos));
    }

    /** Reads {@code count} tokens of type {@code dtype} starting at byte {@code pos}, widened to long. */
    void readTokens(long pos, TokenDType dtype, long[] dst, int dstPos, int count) {
        long end = pos + (long) count * dtype.size();
        if (count < 0 || pos < 0 || end > size) {
            throw new IndexOutOfBoundsException(path + ": " + count + " " + dtype + " tokens at byte " + pos
                    + " run past the end of the file (" + size + " bytes)");
        }
        int step = dtype.size();
        long p = pos;
        switch (dtype) {
            case UINT8 -> { for (int i = 0; i < count; i++, p += step) dst[dstPos + i] = getByte(p) & 0xFFL; }
            case INT8 -> { for (int i = 0; i < count; i++, p += step) dst[dstPos + i] = getByte(p); }
            case UINT16 -> { for (int i = 0; i < count; i++, p += step) dst[dstPos + i] = getShort(p) & 0xFFFFL; }
            case INT16 -> { for (int i = 0; i < count; i++, p += step) dst[dstPos + i] = getShort(p); }
            case INT32 -> { for (int i = 0; i < count; i++, p += step) dst[dstPos + i] = getInt(p); }
            case INT64 -> { for (int i = 0; i < count; i++, p += step) dst[dstPos + i] = getLong(p); }
        }
    }

    private MappedByteBuffer window(long pos, int bytes) {
        MappedByteBuffer[] w = windows;
        if (w == null) {
            throw new IllegalStateException(path + " is closed");
        }
        if (pos < 0 || pos > size - bytes) {
            throw new IndexOutOfBoundsException(path + ": read of " + bytes + " bytes at " + pos
                    + " is outside the file (" + size + " bytes)");
        }
        return w[(int) (pos >>> windowBits)];
    }

    private int inWindow(long pos) {
        return (int) (pos & windowMask);
    }

    /** Drops the mappings; the memory is unmapped when they are collected (Java has no eager unmap). */
    @Override
    public void close() {
        windows = null;
    }
}
