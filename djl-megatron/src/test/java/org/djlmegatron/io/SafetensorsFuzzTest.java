package org.djlmegatron.io;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.djlmegatron.fuzz.Mutations;
import org.djlmegatron.fuzz.Robustness;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Robustness of the safetensors reader: damaged files and generated headers (any dtype string,
 * shape and offsets, including negative, overflowing and overlapping ones) give a readable file
 * or a {@link SafetensorsException}, never another exception, an out-of-memory or a hang.
 * The inputs are seeded random ({@link Mutations}); a failure names the seed and input.
 */
class SafetensorsFuzzTest {

    private static final String GOOD_HEADER = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
            + "\"b\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[24,40]},\"__metadata__\":{\"format\":\"pt\"}}";
    private static final byte[] GOOD = file(GOOD_HEADER, 40);

    @TempDir
    static Path dir; // removed by JUnit after the class

    static byte[] file(String header, int dataBytes) {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h);
        for (int i = 0; i < dataBytes; i++) {
            b.put((byte) (i * 7));
        }
        return b.array();
    }

    private static final List<String> DTYPES = List.of("F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8",
            "BOOL", "f32", "X", "", "F8_E4M3");
    private static final List<String> DIMS = List.of("0", "1", "2", "3", "6", "-1", "2147483648", "4611686018427387904",
            "9223372036854775807", "1.5", "\"2\"", "null");
    private static final List<String> OFFSETS = List.of("0", "8", "24", "40", "41", "-8", "9223372036854775807", "1e3");
    private static final List<String> NAMES = List.of("a", "b", "__metadata__", "");
    private static final List<String> WEIRD = List.of("[]", "{}", "null", "{\"a\":[]}", "{\"a\":{\"dtype\":\"F32\"}}",
            "{\"__metadata__\":{\"k\":1}}", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}");

    @Test
    void damagedFilesAreReadOrRefused() {
        for (int i = 0; i < 300; i++) {
            byte[] bytes = Mutations.sample(GOOD, 0, 8 + GOOD_HEADER.length(), 256, Mutations.random(Mutations.SEED, i));
            readAll(Mutations.where(Mutations.SEED, i), bytes);
        }
    }

    @Test
    void generatedHeadersAreReadOrRefused() {
        for (int i = 0; i < 300; i++) {
            readAll(Mutations.where(Mutations.SEED, i), file(header(Mutations.random(Mutations.SEED, i)), 40));
        }
    }

    /** A header of 1 to 3 entries (any dtype string, shape and offsets) or a malformed one. */
    static String header(Random rnd) {
        if (rnd.nextBoolean()) {
            return Mutations.oneOf(WEIRD, rnd);
        }
        List<String> entries = new ArrayList<>();
        for (int n = 1 + rnd.nextInt(3); entries.size() < n; ) {
            List<String> dims = new ArrayList<>();
            for (int d = rnd.nextInt(5); dims.size() < d; ) {
                dims.add(Mutations.oneOf(DIMS, rnd));
            }
            entries.add("\"" + Mutations.oneOf(NAMES, rnd) + "\":{\"dtype\":\"" + Mutations.oneOf(DTYPES, rnd)
                    + "\",\"shape\":[" + String.join(",", dims) + "],\"data_offsets\":[" + Mutations.oneOf(OFFSETS, rnd)
                    + "," + Mutations.oneOf(OFFSETS, rnd) + "]}");
        }
        return "{" + String.join(",", entries) + "}";
    }

    private static void readAll(String where, byte[] bytes) {
        Path f = dir.resolve("t" + Thread.currentThread().getId() + ".safetensors");
        try {
            Files.write(f, bytes);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        Robustness.valueOrTyped(where + ": " + describe(bytes), () -> {
            try (SafetensorsReader r = SafetensorsReader.open(f)) {
                r.metadata();
                for (String k : List.copyOf(r.keys())) {
                    SafetensorsDType d = r.info(k).dtype();
                    if (d == SafetensorsDType.F32 || d == SafetensorsDType.F16 || d == SafetensorsDType.BF16) {
                        r.loadFloats(k);
                    } else if (d != SafetensorsDType.F64) {
                        r.loadLongs(k);
                    }
                }
            }
            return null;
        }, SafetensorsException.class);
    }

    private static String describe(byte[] bytes) {
        int n = Math.min(bytes.length, 200);
        return bytes.length + " bytes: " + new String(bytes, 0, n, StandardCharsets.ISO_8859_1).replaceAll("[^\\x20-\\x7e]", ".");
    }
}
