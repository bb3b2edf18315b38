package org.djlmegatron.io.torch;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;

/**
 * A byte range of an open file: a whole torch.save file, or one torch.save item embedded in a
 * distributed-checkpoint {@code .distcp} file. Reads are positional, so one slice (and its
 * channel) serves several threads. Offsets are relative to the slice.
 *
 * @param file the file, for error messages
 * @param channel an open channel on it; the slice does not own it
 * @param start absolute offset of the slice's first byte
 * @param length bytes in the slice
 */
public record FileSlice(Path file, FileChannel channel, long start, long length) {

    /** The slice's name in errors: the file, with the range when it is a part of it. */
    public String describe() {
        try {
            if (start == 0 && length == channel.size()) {
                return file.toString();
            }
        } catch (IOException e) {
            // fall through to the explicit form
        }
        return file + "[" + start + ", +" + length + ")";
    }

    /** Reads {@code len} bytes at {@code offset} into a new array. */
    public byte[] read(long offset, int len, String what) {
        ByteBuffer dst = ByteBuffer.allocate(len);
        read(offset, dst, what);
        return dst.array();
    }

    /** Fills {@code dst} (its remaining bytes) from {@code offset}, advancing its position. */
    public void read(long offset, ByteBuffer dst, String what) {
        int len = dst.remaining();
        check(offset, len, what);
        try {
            PositionalIo.readFully(channel, dst, start + offset);
        } catch (EOFException e) {
            throw new TorchFormatException(describe() + ": " + what + ": " + e.getMessage() + " of the " + len
                    + " bytes at " + (start + offset) + " (truncated?)", e);
        } catch (IOException e) {
            throw new TorchFormatException(describe() + ": " + what + ": read failed: " + e, e);
        }
    }

    private void check(long offset, long len, String what) {
        if (offset < 0 || len < 0 || offset > length - len) {
            throw new TorchFormatException(describe() + ": " + what + ": bytes [" + offset + ", " + (offset + len)
                    + ") lie outside the " + length + " bytes available (truncated?)");
        }
    }
}
