package org.djlmegatron.bridge.convert;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.io.torch.PositionalIo;

/**
 * Writes one safetensors file whose tensors are declared up front: the header (padded to 8 bytes
 * as the Rust implementation pads it) goes out first, then each tensor's bytes land at their
 * offset whenever they arrive, so many files can be filled in step with one tensor in memory.
 */
public final class SafetensorsFileWriter implements AutoCloseable {

    /**
     * A declared tensor.
     *
     * @param name its key
     * @param dtype element type
     * @param shape dimensions
     */
    public record Entry(String name, SafetensorsDType dtype, long[] shape) {
        long byteLength() {
            long n = dtype.elementSize();
            for (long d : shape) {
                n *= d;
            }
            return n;
        }
    }

    private static final Gson GSON = new GsonBuilder().disableHtmlEscaping().create();

    private final Path file;
    private final FileChannel out;
    private final Map<String, long[]> ranges = new LinkedHashMap<>(); // name -> {start, length}
    private final Map<String, Entry> entries = new LinkedHashMap<>();

    private SafetensorsFileWriter(Path file, FileChannel out) {
        this.file = file;
        this.out = out;
    }

    /** Creates {@code file} (which must not exist) and writes its header. */
    public static SafetensorsFileWriter create(Path file, List<Entry> tensors, Map<String, String> metadata) {
        FileChannel ch;
        try {
            ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
        } catch (IOException e) {
            throw new CheckpointException(file + ": cannot create: " + e, e);
        }
        SafetensorsFileWriter w = new SafetensorsFileWriter(file, ch);
        try {
            w.writeHeader(tensors, metadata);
        } catch (RuntimeException e) {
            w.close();
            throw e;
        }
        return w;
    }

    private void writeHeader(List<Entry> tensors, Map<String, String> metadata) {
        JsonObject root = new JsonObject();
        if (metadata != null && !metadata.isEmpty()) {
            JsonObject m = new JsonObject();
            metadata.forEach(m::addProperty);
            root.add("__metadata__", m);
        }
        long offset = 0;
        for (Entry e : tensors) {
            JsonObject t = new JsonObject();
            t.addProperty("dtype", e.dtype().code());
            JsonArray shape = new JsonArray();
            Arrays.stream(e.shape()).forEach(shape::add);
            t.add("shape", shape);
            JsonArray offsets = new JsonArray();
            offsets.add(offset);
            offsets.add(offset + e.byteLength());
            t.add("data_offsets", offsets);
            if (root.has(e.name())) {
                throw new IllegalArgumentException(file + ": tensor '" + e.name() + "' declared twice");
            }
            root.add(e.name(), t);
            ranges.put(e.name(), new long[] {offset, e.byteLength()});
            entries.put(e.name(), e);
            offset += e.byteLength();
        }
        byte[] json = GSON.toJson(root).getBytes(StandardCharsets.UTF_8);
        int padded = (json.length + 7) / 8 * 8;
        byte[] header = Arrays.copyOf(json, padded);
        Arrays.fill(header, json.length, padded, (byte) ' ');
        ByteBuffer prefix = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(padded).flip();
        writeAt(0, prefix);
        writeAt(8, ByteBuffer.wrap(header));
        long dataStart = 8L + padded;
        ranges.values().forEach(r -> r[0] += dataStart);
    }

    /** Writes a declared tensor's bytes (its exact length, once). */
    public void write(String name, HostTensor t) {
        long[] r = ranges.remove(name);
        if (r == null) {
            throw new IllegalArgumentException(file + ": tensor '" + name + "' is not declared or already written");
        }
        Entry e = entries.get(name);
        if (t.dtype() != e.dtype() || !Arrays.equals(t.shape(), e.shape())) {
            throw new IllegalArgumentException(file + ": tensor '" + name + "' declared " + e.dtype().code() + " "
                    + Arrays.toString(e.shape()) + ", given " + t);
        }
        writeAt(r[0], t.buffer());
    }

    /** Writes a declared tensor's raw bytes (exactly its length, once). */
    public void write(String name, ByteBuffer data) {
        long[] r = ranges.remove(name);
        if (r == null) {
            throw new IllegalArgumentException(file + ": tensor '" + name + "' is not declared or already written");
        }
        if (data.remaining() != r[1]) {
            throw new IllegalArgumentException(file + ": tensor '" + name + "' is declared with " + r[1]
                    + " bytes, given " + data.remaining());
        }
        writeAt(r[0], data);
    }

    /** Checks every tensor was written and syncs the file. */
    public void finish() {
        if (!ranges.isEmpty()) {
            throw new IllegalStateException(file + ": tensors never written: " + ranges.keySet());
        }
        try {
            out.force(true);
        } catch (IOException e) {
            throw new CheckpointException(file + ": sync failed: " + e, e);
        }
    }

    private void writeAt(long pos, ByteBuffer b) {
        try {
            PositionalIo.writeFully(out, b, pos);
        } catch (IOException e) {
            throw new CheckpointException(file + ": write failed: " + e, e);
        }
    }

    @Override
    public void close() {
        try {
            out.close();
        } catch (IOException e) {
            throw new CheckpointException(file + ": close failed: " + e, e);
        }
    }
}
