package org.djlmegatron.io;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.concurrent.atomic.AtomicReferenceArray;

/**
 * A read-only file mapped lazily in fixed-size windows, addressed with {@code long} offsets.
 *
 * <p>One {@link MappedByteBuffer} cannot exceed 2 GB, so the file is split into windows of
 * {@code windowSize} bytes, each mapped on first use and kept for reuse. Reads that straddle a
 * window boundary are split. Safe for concurrent readers: windows are only read with absolute
 * indexing, never through their position.
 */
final class MappedFile implements AutoCloseable {

    /** 1 GiB: large enough that a typical checkpoint needs few mappings. */
    static final long DEFAULT_WINDOW = 1L << 30;

    private final Path path;
    private final FileChannel channel;
    private final long size;
    private final long windowSize;
    private final AtomicReferenceArray<MappedByteBuffer> windows;

    private MappedFile(Path path, FileChannel channel, long windowSize) throws IOException {
        this.path = path;
        this.channel = channel;
        this.size = channel.size();
        this.windowSize = windowSize;
        this.windows = new AtomicReferenceArray<>(Math.toIntExact((size + windowSize - 1) / windowSize));
    }

    static MappedFile open(Path path, long windowSize) throws IOException {
        if (windowSize < 1 || windowSize > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("windowSize must be in [1, 2^31-1], found " + windowSize);
        }
        FileChannel channel = FileChannel.open(path, StandardOpenOption.READ);
        try {
            return new MappedFile(path, channel, windowSize);
        } catch (IOException | RuntimeException e) {
            channel.close();
            throw e;
        }
    }

    Path path() {
        return path;
    }

    FileChannel channel() {
        return channel;
    }

    /**
     * Copies {@code dst.remaining()} bytes starting at absolute file offset {@code offset} into
     * {@code dst}, advancing its position.
     */
    void read(long offset, ByteBuffer dst) throws IOException {
        long length = dst.remaining();
        if (offset < 0 || offset > size - length) {
            throw new SafetensorsException(path + ": read of " + length + " bytes at offset " + offset
                    + " is past the end of the file (size " + size + ")");
        }
        long pos = offset;
        while (dst.hasRemaining()) {
            int index = (int) (pos / windowSize);
            MappedByteBuffer window = window(index);
            int inWindow = (int) (pos - index * windowSize);
            int n = Math.min(dst.remaining(), window.capacity() - inWindow);
            dst.put(dst.position(), window, inWindow, n);
            dst.position(dst.position() + n);
            pos += n;
        }
    }

    private MappedByteBuffer window(int index) throws IOException {
        MappedByteBuffer w = windows.get(index);
        if (w == null) {
            long start = index * windowSize;
            long length = Math.min(windowSize, size - start);
            w = channel.map(FileChannel.MapMode.READ_ONLY, start, length);
            // Two threads may map the same window; keep whichever landed first.
            if (!windows.compareAndSet(index, null, w)) {
                w = windows.get(index);
            }
        }
        return w;
    }

    /**
     * Closes the channel and drops the windows. Their memory is unmapped when they are garbage
     * collected: Java offers no supported way to unmap eagerly.
     */
    @Override
    public void close() throws IOException {
        for (int i = 0; i < windows.length(); i++) {
            windows.set(i, null);
        }
        channel.close();
    }
}
