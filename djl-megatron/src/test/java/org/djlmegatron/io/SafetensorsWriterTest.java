package org.djlmegatron.io;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

class SafetensorsWriterTest {

    private static NDManager manager;

    @TempDir
    Path tmp;

    @BeforeAll
    static void startEngine() {
        manager = NDManager.newBaseManager();
    }

    @AfterAll
    static void stopEngine() {
        manager.close();
    }

    /** A [2, 3] array of the given type with distinct values, including negatives where they exist. */
    private static NDArray sample(NDManager m, DataType type) {
        return switch (type) {
            case BOOLEAN -> m.create(new boolean[] {true, false, false, true, true, false}, new Shape(2, 3));
            case UINT8 -> m.create(new byte[] {0, 1, 2, (byte) 200, (byte) 254, (byte) 255}, new Shape(2, 3))
                    .toType(DataType.UINT8, false);
            case INT8 -> m.create(new byte[] {-128, -1, 0, 1, 2, 127}, new Shape(2, 3));
            default -> m.create(new double[] {-2.5, -1, 0, 0.5, 1e3, 65504}, new Shape(2, 3)).toType(type, false);
        };
    }

    @ParameterizedTest
    @EnumSource(value = DataType.class,
            names = {"FLOAT32", "FLOAT16", "FLOAT64", "INT64", "INT32", "INT8", "UINT8", "BOOLEAN"})
    void roundTripsEachDtypeIncludingScalarAndEmpty(DataType type) {
        Path file = tmp.resolve(type + ".safetensors");
        try (NDManager m = manager.newSubManager()) {
            NDArray matrix = sample(m, type);
            assertThat(matrix.getDataType()).isEqualTo(type);
            Map<String, NDArray> tensors = new LinkedHashMap<>();
            tensors.put("matrix", matrix);
            tensors.put("scalar", matrix.get(1, 2));
            tensors.put("empty", m.zeros(new Shape(0, 4), type));
            tensors.put("columns", matrix.transpose()); // a non-contiguous view
            SafetensorsWriter.write(file, tensors, Map.of("dtype", type.toString()));

            try (SafetensorsReader r = SafetensorsReader.open(file)) {
                assertThat(r.metadata()).containsExactly(Map.entry("dtype", type.toString()));
                assertThat(r.info("matrix").dtype()).isEqualTo(SafetensorsDType.forWriting(type));
                for (Map.Entry<String, NDArray> e : tensors.entrySet()) {
                    NDArray back = r.load(m, e.getKey());
                    assertThat(back.getDataType()).as(e.getKey()).isEqualTo(type);
                    assertThat(back.getShape()).as(e.getKey()).isEqualTo(e.getValue().getShape());
                    assertThat(back.toByteBuffer()).as(e.getKey()).isEqualTo(e.getValue().toByteBuffer());
                }
                assertThat(r.info("scalar").shape()).isEmpty();
                assertThat(r.info("columns").shape()).containsExactly(3, 2);
            }
        }
    }

    @Test
    void headerIsSpacePaddedAndTensorsContiguousInInsertionOrder() throws IOException {
        Path file = tmp.resolve("layout.safetensors");
        try (NDManager m = manager.newSubManager()) {
            Map<String, NDArray> tensors = new LinkedHashMap<>();
            tensors.put("z_last_name_first", m.create(new float[] {1, 2, 3}));
            tensors.put("a", m.create(new long[] {7}));
            tensors.put("m", m.create(new byte[] {1, 2, 3, 4, 5}));
            SafetensorsWriter.write(file, tensors, null);
        }
        byte[] bytes = Files.readAllBytes(file);
        long headerLength = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).getLong();
        assertThat(headerLength % 8).isZero();
        String header = new String(bytes, 8, (int) headerLength, StandardCharsets.UTF_8);
        assertThat(header).startsWith("{\"z_last_name_first\"").doesNotContain("__metadata__");
        assertThat(header.stripTrailing()).endsWith("}");
        assertThat(header.substring(header.stripTrailing().length())).matches(" {0,7}");
        JsonObject json = JsonParser.parseString(header).getAsJsonObject();
        assertThat(json.keySet()).containsExactly("z_last_name_first", "a", "m");
        assertThat(json.getAsJsonObject("a").get("data_offsets").toString()).isEqualTo("[12,20]");
        assertThat(json.getAsJsonObject("m").get("data_offsets").toString()).isEqualTo("[20,25]");
        assertThat(json.getAsJsonObject("m").get("dtype").getAsString()).isEqualTo("I8");
        assertThat(bytes.length).isEqualTo(8 + headerLength + 25);
    }

    @Test
    void replacesAnExistingFile() {
        Path file = tmp.resolve("model.safetensors");
        try (NDManager m = manager.newSubManager()) {
            SafetensorsWriter.write(file, Map.of("a", m.create(new float[] {1})), Map.of());
            SafetensorsWriter.write(file, Map.of("b", m.create(new float[] {2, 3})), Map.of());
        }
        try (SafetensorsReader r = SafetensorsReader.open(file)) {
            assertThat(r.keys()).containsExactly("b");
            assertThat(r.loadFloats("b")).containsExactly(2, 3);
        }
        assertThat(listing(tmp)).containsExactly("model.safetensors");
    }

    @Test
    void writtenFileHasOrdinaryPermissions() throws IOException {
        Path file = tmp.resolve("perm.safetensors");
        try (NDManager m = manager.newSubManager()) {
            SafetensorsWriter.write(file, Map.of("a", m.create(new float[] {1})), null);
        }
        Path plain = Files.createFile(tmp.resolve("plain"));
        assertThat(Files.getPosixFilePermissions(file)).isEqualTo(Files.getPosixFilePermissions(plain));
    }

    @Test
    void unsupportedDtypeMidwayLeavesExistingFileAndNoTempFile() throws IOException {
        Path file = tmp.resolve("model.safetensors");
        try (NDManager m = manager.newSubManager()) {
            SafetensorsWriter.write(file, Map.of("good", m.create(new float[] {1, 2})), Map.of());
            byte[] before = Files.readAllBytes(file);
            Map<String, NDArray> tensors = new LinkedHashMap<>();
            tensors.put("first", m.create(new float[] {5}));
            tensors.put("text", m.create(new String[] {"not", "numeric"}));
            tensors.put("last", m.create(new float[] {6}));
            assertThatThrownBy(() -> SafetensorsWriter.write(file, tensors, Map.of()))
                    .isInstanceOf(SafetensorsException.class)
                    .hasMessageContaining(file.toString())
                    .hasMessageContaining("tensor 'text'")
                    .hasMessageContaining("field 'dtype'")
                    .hasMessageContaining("STRING");
            assertThat(Files.readAllBytes(file)).isEqualTo(before);
        }
        assertThat(listing(tmp)).containsExactly("model.safetensors");
    }

    @Test
    void missingTargetDirectoryCreatesNothing() {
        Path file = tmp.resolve("no/such/dir/model.safetensors");
        try (NDManager m = manager.newSubManager()) {
            assertThatThrownBy(() -> SafetensorsWriter.write(file, Map.of("a", m.create(new float[] {1})), null))
                    .isInstanceOf(SafetensorsException.class)
                    .hasMessageContaining(file.toString())
                    .hasMessageContaining("temporary file");
        }
        assertThat(listing(tmp)).isEmpty();
    }

    @Test
    void reservedNameIsRejected() {
        Path file = tmp.resolve("x.safetensors");
        try (NDManager m = manager.newSubManager()) {
            assertThatThrownBy(() -> SafetensorsWriter.write(file,
                    Map.of("__metadata__", m.create(new float[] {1})), null))
                    .isInstanceOf(SafetensorsException.class)
                    .hasMessageContaining(file.toString())
                    .hasMessageContaining("reserved");
        }
        assertThat(listing(tmp)).isEmpty();
    }

    @Test
    void rewritesTheHuggingFaceFixtureBitExactly() {
        Path source = SafetensorsFiles.llamaFixture("golden.safetensors");
        Path copy = tmp.resolve("golden.safetensors");
        try (SafetensorsReader r = SafetensorsReader.open(source); NDManager m = manager.newSubManager()) {
            Map<String, NDArray> all = new LinkedHashMap<>();
            r.keys().forEach(k -> all.put(k, r.load(m, k)));
            SafetensorsWriter.write(copy, all, r.metadata());
            try (SafetensorsReader back = SafetensorsReader.open(copy)) {
                assertThat(back.keys()).isEqualTo(r.keys());
                for (String k : r.keys()) {
                    assertThat(back.info(k).shape()).isEqualTo(r.info(k).shape());
                    assertThat(back.info(k).dtype()).isEqualTo(r.info(k).dtype());
                    assertThat(back.load(m, k).toByteBuffer()).as(k).isEqualTo(all.get(k).toByteBuffer());
                }
            }
        }
    }

    private static List<String> listing(Path dir) {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        } catch (IOException e) {
            throw new AssertionError(e);
        }
    }

}
