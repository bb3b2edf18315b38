package org.djlmegatron.io;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.lifecycle.AfterContainer;
import net.jqwik.api.lifecycle.BeforeContainer;
import org.djlmegatron.fuzz.Mutations;
import org.djlmegatron.fuzz.Robustness;

/**
 * Robustness of the safetensors reader: damaged files and generated headers (any dtype string,
 * shape and offsets, including negative, overflowing and overlapping ones) give a readable file
 * or a {@link SafetensorsException}, never another exception, an out-of-memory or a hang.
 */
class SafetensorsFuzzTest {

    private static final String GOOD_HEADER = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
            + "\"b\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[24,40]},\"__metadata__\":{\"format\":\"pt\"}}";
    private static final byte[] GOOD = file(GOOD_HEADER, 40);

    private static Path dir;

    @BeforeContainer
    static void makeDir() throws IOException {
        dir = Files.createTempDirectory("safetensors-fuzz");
    }

    @AfterContainer
    static void removeDir() throws IOException {
        try (var files = Files.list(dir)) {
            for (Path p : files.toList()) {
                Files.delete(p);
            }
        }
        Files.delete(dir);
    }

    static byte[] file(String header, int dataBytes) {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h);
        for (int i = 0; i < dataBytes; i++) {
            b.put((byte) (i * 7));
        }
        return b.array();
    }

    @Property(tries = 300)
    void damagedFilesAreReadOrRefused(@ForAll("damaged") byte[] bytes) {
        readAll(bytes);
    }

    @Property(tries = 300)
    void generatedHeadersAreReadOrRefused(@ForAll("headers") String header) {
        readAll(file(header, 40));
    }

    @Provide
    Arbitrary<byte[]> damaged() {
        return Mutations.of(GOOD, 0, 8 + GOOD_HEADER.length(), 256);
    }

    @Provide
    Arbitrary<String> headers() {
        Arbitrary<String> dtype = Arbitraries.of("F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL",
                "f32", "X", "", "F8_E4M3");
        Arbitrary<String> dim = Arbitraries.of("0", "1", "2", "3", "6", "-1", "2147483648", "4611686018427387904",
                "9223372036854775807", "1.5", "\"2\"", "null");
        Arbitrary<String> shape = dim.list().ofMaxSize(4).map(d -> "[" + String.join(",", d) + "]");
        Arbitrary<String> offset = Arbitraries.of("0", "8", "24", "40", "41", "-8", "9223372036854775807", "1e3");
        Arbitrary<String> tensor = Combinators.combine(dtype, shape, offset, offset)
                .as((d, s, a, b) -> "{\"dtype\":\"" + d + "\",\"shape\":" + s + ",\"data_offsets\":[" + a + "," + b + "]}");
        Arbitrary<String> entry = Combinators.combine(Arbitraries.of("a", "b", "__metadata__", ""), tensor)
                .as((name, t) -> "\"" + name + "\":" + t);
        Arbitrary<String> weird = Arbitraries.of("[]", "{}", "null", "{\"a\":[]}", "{\"a\":{\"dtype\":\"F32\"}}",
                "{\"__metadata__\":{\"k\":1}}", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}");
        return Arbitraries.oneOf(entry.list().ofMinSize(1).ofMaxSize(3).map(es -> "{" + String.join(",", es) + "}"), weird);
    }

    private static void readAll(byte[] bytes) {
        Path f = dir.resolve("t" + Thread.currentThread().getId() + ".safetensors");
        try {
            Files.write(f, bytes);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        Robustness.valueOrTyped(describe(bytes), () -> {
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
