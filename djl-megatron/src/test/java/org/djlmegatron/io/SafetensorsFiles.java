package org.djlmegatron.io;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/** Test helpers: fixture paths and hand-crafted safetensors bytes. */
final class SafetensorsFiles {

    private SafetensorsFiles() {}

    /** A file under {@code ../shared/fixtures/hf/llama}, read in place (never copied into the repo). */
    static Path llamaFixture(String name) {
        return Path.of(System.getProperty("djlm.repo.root", "."))
                .resolve("../shared/fixtures/hf/llama")
                .resolve(name)
                .normalize();
    }

    /** Writes {@code [u64 len][header][data]} with the header exactly as given (no padding). */
    static Path craft(Path file, String header, byte[] data) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + data.length).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h).put(data);
        return Files.write(file, b.array());
    }

    /** Little-endian bytes of 16-bit values. */
    static byte[] shorts(int... values) {
        ByteBuffer b = ByteBuffer.allocate(2 * values.length).order(ByteOrder.LITTLE_ENDIAN);
        for (int v : values) {
            b.putShort((short) v);
        }
        return b.array();
    }

    /** Little-endian bytes of float32 values. */
    static byte[] floats(float... values) {
        ByteBuffer b = ByteBuffer.allocate(4 * values.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float v : values) {
            b.putFloat(v);
        }
        return b.array();
    }
}
