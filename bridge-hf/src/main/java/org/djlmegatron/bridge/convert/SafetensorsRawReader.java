package org.djlmegatron.bridge.convert;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import org.djlmegatron.io.SafetensorsReader;
import org.djlmegatron.io.TensorInfo;
import org.djlmegatron.io.torch.PositionalIo;

/**
 * Raw bytes of the tensors of a safetensors checkpoint (single file, sharded index, or directory),
 * in their stored type: what conversions move without decoding. Headers are validated by
 * {@link SafetensorsReader}; data is read with positional reads, so it is thread-safe.
 */
public final class SafetensorsRawReader implements AutoCloseable {

    private final SafetensorsReader headers;
    private final Map<Path, FileChannel> channels = new ConcurrentHashMap<>();

    private SafetensorsRawReader(SafetensorsReader headers) {
        this.headers = headers;
    }

    /** Opens a file, an index or a directory as {@link SafetensorsReader#open} does. */
    public static SafetensorsRawReader open(Path path) {
        return new SafetensorsRawReader(SafetensorsReader.open(path));
    }

    public Path source() {
        return headers.source();
    }

    public Set<String> keys() {
        return headers.keys();
    }

    public boolean contains(String name) {
        return headers.contains(name);
    }

    public TensorInfo info(String name) {
        return headers.info(name);
    }

    /** The stored tensor, checked against {@code expectedShape} (null skips the check). */
    public HostTensor read(String name, long[] expectedShape) {
        if (!headers.contains(name)) {
            throw new CheckpointException(source() + ": tensor '" + name + "' is missing");
        }
        TensorInfo t = headers.info(name);
        if (expectedShape != null && !Arrays.equals(t.shape(), expectedShape)) {
            throw new CheckpointException(t.file() + ": tensor '" + name + "' has shape " + Arrays.toString(t.shape())
                    + ", expected " + Arrays.toString(expectedShape));
        }
        if (t.byteLength() > Integer.MAX_VALUE - 8) {
            throw new CheckpointException(t.file() + ": tensor '" + name + "' has " + t.byteLength()
                    + " bytes, more than one Java array holds (2 GiB)");
        }
        ByteBuffer dst = ByteBuffer.allocate((int) t.byteLength());
        FileChannel ch = channels.computeIfAbsent(t.file(), SafetensorsRawReader::openChannel);
        try {
            PositionalIo.readFully(ch, dst, t.dataStart());
        } catch (IOException e) {
            throw new CheckpointException(t.file() + ": reading tensor '" + name + "' failed: " + e, e);
        }
        return new HostTensor(t.dtype(), t.shape(), dst.array());
    }

    private static FileChannel openChannel(Path file) {
        try {
            return FileChannel.open(file, StandardOpenOption.READ);
        } catch (IOException e) {
            throw new CheckpointException(file + ": cannot open: " + e, e);
        }
    }

    @Override
    public void close() {
        for (FileChannel c : channels.values()) {
            try {
                c.close();
            } catch (IOException ignored) {
                // read-only: nothing to lose
            }
        }
        headers.close();
    }
}
