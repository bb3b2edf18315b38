package org.djlmegatron.data;

import java.io.BufferedInputStream;
import java.io.FilterInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.zip.GZIPInputStream;

/**
 * Reads a text file as batches of whole lines, in constant memory (one batch and one buffer,
 * plus any single line longer than a batch). Gzip input (any name; detected by its magic bytes)
 * is decompressed on the fly. Lines end at {@code '\n'}; a last line without one still counts.
 */
final class LineBatchReader implements AutoCloseable {

    private static final int BUFFER = 1 << 20;

    private final long size;
    private final CountingStream counted;
    private final boolean gzip;
    private final InputStream in;
    private final byte[] buf = new byte[BUFFER];
    private int pos;
    private int limit;
    private boolean eof;
    private long nextLine = 1;
    private long delivered;

    private LineBatchReader(Path path) throws IOException {
        this.size = Files.size(path);
        this.counted = new CountingStream(Files.newInputStream(path));
        BufferedInputStream raw = new BufferedInputStream(counted, BUFFER);
        raw.mark(2);
        this.gzip = raw.read() == 0x1F && raw.read() == 0x8B;
        raw.reset();
        this.in = gzip ? new GZIPInputStream(raw, BUFFER) : raw;
    }

    static LineBatchReader open(Path path) throws IOException {
        return new LineBatchReader(path);
    }

    /** Size of the file on disk (compressed size for gzip). */
    long size() {
        return size;
    }

    /**
     * The next lines, at least one, until {@code targetBytes} of text or {@code maxLines} lines
     * are reached; null at the end of the file.
     */
    LineBatch next(int targetBytes, int maxLines) throws IOException {
        byte[] data = new byte[Math.max(16, targetBytes + targetBytes / 4)];
        int[] ends = new int[Math.min(maxLines, 1024)];
        int size = 0;
        int count = 0;
        while (count < maxLines && size < targetBytes) {
            boolean any = false;
            boolean ended = false;
            while (!ended) {
                if (pos == limit && !fill()) {
                    break;
                }
                int nl = indexOfNewline(pos, limit);
                int stop = nl < 0 ? limit : nl;
                int n = stop - pos;
                if (size + n > data.length) {
                    data = Arrays.copyOf(data, Math.max(data.length * 2, size + n));
                }
                System.arraycopy(buf, pos, data, size, n);
                size += n;
                any = true;
                pos = nl < 0 ? limit : nl + 1;
                ended = nl >= 0;
                delivered += n + (ended ? 1 : 0);
            }
            if (!any) {
                break;
            }
            if (count == ends.length) {
                ends = Arrays.copyOf(ends, ends.length * 2);
            }
            ends[count++] = size;
            if (!ended) {
                break; // the end of the file
            }
        }
        if (count == 0) {
            return null;
        }
        // plain files report exactly what was consumed; gzip can only report compressed bytes read ahead
        LineBatch batch = new LineBatch(nextLine, data, ends, count, gzip ? counted.count : delivered);
        nextLine += count;
        return batch;
    }

    private int indexOfNewline(int from, int to) {
        for (int i = from; i < to; i++) {
            if (buf[i] == '\n') {
                return i;
            }
        }
        return -1;
    }

    private boolean fill() throws IOException {
        if (eof) {
            return false;
        }
        int n = in.read(buf, 0, buf.length);
        if (n < 0) {
            eof = true;
            return false;
        }
        pos = 0;
        limit = n;
        return true;
    }

    @Override
    public void close() throws IOException {
        in.close();
    }

    /** Counts the bytes taken from the file, before any decompression. */
    private static final class CountingStream extends FilterInputStream {
        private long count;

        CountingStream(InputStream in) {
            super(in);
        }

        @Override
        public int read() throws IOException {
            int b = super.read();
            if (b >= 0) {
                count++;
            }
            return b;
        }

        @Override
        public int read(byte[] b, int off, int len) throws IOException {
            int n = super.read(b, off, len);
            if (n > 0) {
                count += n;
            }
            return n;
        }
    }
}
