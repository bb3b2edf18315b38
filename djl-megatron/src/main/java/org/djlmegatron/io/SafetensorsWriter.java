package org.djlmegatron.io;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonObject;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.security.SecureRandom;
import java.util.Arrays;
import java.util.Map;

/**
 * Writes safetensors files readable by the Hugging Face {@code safetensors} libraries.
 *
 * <p>The file appears atomically: data goes to a temporary file in the target's directory, which
 * is synced and then renamed over the target. On any failure the temporary file is deleted and
 * an existing target is left as it was. Tensors are streamed one at a time, never the whole
 * file in memory; one tensor is limited to 2^31-1 bytes by DJL's buffer API.
 */
public final class SafetensorsWriter {

    private static final SecureRandom RANDOM = new SecureRandom();

    private static final Gson GSON = new GsonBuilder().disableHtmlEscaping().create();

    private SafetensorsWriter() {}

    /**
     * Writes tensors in the map's iteration order, contiguously, after a header padded with
     * spaces to a multiple of 8 bytes (as the Rust implementation does, so data is 8-byte aligned).
     *
     * @param file the target; replaced atomically if it exists
     * @param tensors FLOAT64, FLOAT32, FLOAT16, BFLOAT16, INT64, INT32, INT8, UINT8 or BOOLEAN arrays on any
     *     device; use a {@link java.util.LinkedHashMap} for a defined order
     * @param metadata written as {@code __metadata__}; {@code null} or empty writes none
     * @throws SafetensorsException on an unsupported dtype, a reserved name or an I/O failure
     */
    public static void write(Path file, Map<String, NDArray> tensors, Map<String, String> metadata) {
        ElementCopier.requireLittleEndianHost();
        Path target = file.toAbsolutePath();
        // A hidden sibling, so the rename stays within one file system. Created like any new
        // file (umask permissions), not with createTempFile's owner-only 0600.
        Path tmp = target.resolveSibling("." + target.getFileName() + "."
                + Long.toUnsignedString(RANDOM.nextLong(), 36) + ".tmp");
        FileChannel out;
        try {
            out = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
        } catch (IOException e) {
            throw new SafetensorsException(file + ": cannot create a temporary file next to it: " + e, e);
        }
        try {
            try (out) {
                writeAll(out, file, tensors, metadata);
                out.force(true);
            }
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            deleteQuietly(tmp, e);
            throw new SafetensorsException(file + ": write failed: " + e, e);
        } catch (RuntimeException | Error e) {
            deleteQuietly(tmp, e);
            throw e;
        }
    }

    private static void deleteQuietly(Path tmp, Throwable failure) {
        try {
            Files.deleteIfExists(tmp);
        } catch (IOException suppressed) {
            failure.addSuppressed(suppressed);
        }
    }

    private static void writeAll(FileChannel out, Path file, Map<String, NDArray> tensors,
            Map<String, String> metadata) throws IOException {
        byte[] header = header(file, tensors, metadata);
        ByteBuffer prefix = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(header.length);
        writeFully(out, prefix.flip());
        writeFully(out, ByteBuffer.wrap(header));
        for (Map.Entry<String, NDArray> e : tensors.entrySet()) {
            ByteBuffer data = bytesOf(e.getValue());
            long expected = byteLength(e.getValue());
            if (data.remaining() != expected) {
                throw new SafetensorsException(file + ": tensor '" + e.getKey() + "': expected " + expected
                        + " data bytes, the array gave " + data.remaining());
            }
            writeFully(out, data);
        }
    }

    /** The JSON header, UTF-8, padded with spaces so that 8 + its length is a multiple of 8. */
    static byte[] header(Path file, Map<String, NDArray> tensors, Map<String, String> metadata) {
        JsonObject root = new JsonObject();
        if (metadata != null && !metadata.isEmpty()) {
            JsonObject m = new JsonObject();
            metadata.forEach(m::addProperty);
            root.add(SafetensorsHeader.METADATA_KEY, m);
        }
        long offset = 0;
        for (Map.Entry<String, NDArray> e : tensors.entrySet()) {
            String name = e.getKey();
            if (name.equals(SafetensorsHeader.METADATA_KEY)) {
                throw new SafetensorsException(file + ": tensor name '" + name + "' is reserved for metadata");
            }
            NDArray a = e.getValue();
            SafetensorsDType dtype = SafetensorsDType.forWriting(a.getDataType());
            if (dtype == null) {
                throw new SafetensorsException(file + ": tensor '" + name + "': field 'dtype': cannot write "
                        + a.getDataType().name() + ", expected FLOAT64, FLOAT32, FLOAT16, BFLOAT16, INT64, INT32, INT8,"
                        + " UINT8 or BOOLEAN");
            }
            long length = byteLength(a);
            JsonObject t = new JsonObject();
            t.addProperty("dtype", dtype.code());
            JsonArray shape = new JsonArray();
            Arrays.stream(a.getShape().getShape()).forEach(shape::add);
            t.add("shape", shape);
            JsonArray offsets = new JsonArray();
            offsets.add(offset);
            offsets.add(offset + length);
            t.add("data_offsets", offsets);
            root.add(name, t);
            offset += length;
        }
        byte[] json = GSON.toJson(root).getBytes(StandardCharsets.UTF_8);
        int padded = (json.length + 7) / 8 * 8;
        byte[] header = Arrays.copyOf(json, padded);
        Arrays.fill(header, json.length, padded, (byte) ' ');
        return header;
    }

    private static long byteLength(NDArray a) {
        return a.getShape().size() * a.getDataType().getNumOfBytes();
    }

    /** The array's bytes in row-major order; arrays off the CPU are copied there first. */
    private static ByteBuffer bytesOf(NDArray a) {
        if (a.getShape().size() == 0) {
            return ByteBuffer.allocate(0);
        }
        // toByteBuffer() copies through a Java array that DJL makes contiguous natively, and
        // creates no intermediate NDArray on the caller's manager (toByteBuffer(true) would).
        if (a.getDevice().equals(Device.cpu())) {
            return a.toByteBuffer();
        }
        try (NDArray cpu = a.toDevice(Device.cpu(), true)) {
            return cpu.toByteBuffer();
        }
    }

    private static void writeFully(FileChannel out, ByteBuffer data) throws IOException {
        while (data.hasRemaining()) {
            out.write(data);
        }
    }
}
