package org.djlmegatron.io.torch;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;

/**
 * Positional reads and writes of whole buffers in bounded pieces. The JDK moves a heap buffer
 * through a temporary direct buffer of the same size; for tensors of hundreds of megabytes that
 * is a fresh native allocation per call, so large transfers go 8 MiB at a time instead.
 */
public final class PositionalIo {

    static final int PIECE = 8 << 20;

    private PositionalIo() {}

    /** Fills {@code dst}'s remaining bytes from {@code position}; EOF before that is an error. */
    public static void readFully(FileChannel ch, ByteBuffer dst, long position) throws IOException {
        int end = dst.limit();
        long pos = position;
        try {
            while (dst.position() < end) {
                dst.limit(Math.min(end, dst.position() + PIECE));
                int n = ch.read(dst, pos);
                if (n < 0) {
                    throw new EOFException("file ends at byte " + pos + ", " + (end - dst.position())
                            + " bytes short");
                }
                pos += n;
            }
        } finally {
            dst.limit(end);
        }
    }

    /** Writes all of {@code src}'s remaining bytes at {@code position}. */
    public static void writeFully(FileChannel ch, ByteBuffer src, long position) throws IOException {
        int end = src.limit();
        long pos = position;
        try {
            while (src.position() < end) {
                src.limit(Math.min(end, src.position() + PIECE));
                pos += ch.write(src, pos);
            }
        } finally {
            src.limit(end);
        }
    }
}
