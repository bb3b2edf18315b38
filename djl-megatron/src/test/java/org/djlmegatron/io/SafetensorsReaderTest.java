package org.djlmegatron.io;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.djlmegatron.io.SafetensorsFiles.craft;
import static org.djlmegatron.io.SafetensorsFiles.floats;
import static org.djlmegatron.io.SafetensorsFiles.llamaFixture;
import static org.djlmegatron.io.SafetensorsFiles.shorts;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.LongStream;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class SafetensorsReaderTest {

    private static final Path MODEL = llamaFixture("model.safetensors");
    private static final Path GOLDEN = llamaFixture("golden.safetensors");

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

    @Test
    void readsGoldenShapesAndDtypes() {
        try (SafetensorsReader r = SafetensorsReader.open(GOLDEN)) {
            assertThat(r.keys()).containsExactly(
                    "input_ids", "logits", "train_batches", "train_grad_norms", "train_losses");
            assertThat(r.info("input_ids").dtype()).isEqualTo(SafetensorsDType.I64);
            assertThat(r.info("input_ids").shape()).containsExactly(2, 24);
            assertThat(r.info("logits").dtype()).isEqualTo(SafetensorsDType.F32);
            assertThat(r.info("logits").shape()).containsExactly(2, 24, 512);
            assertThat(r.info("train_batches").shape()).containsExactly(3, 2, 24);
            assertThat(r.info("train_losses").shape()).containsExactly(3);
            try (NDManager m = manager.newSubManager()) {
                NDArray ids = r.load(m, "input_ids");
                assertThat(ids.getDataType()).isEqualTo(DataType.INT64);
                assertThat(ids.getShape()).isEqualTo(new Shape(2, 24));
                assertThat(ids.toLongArray()).containsExactly(r.loadLongs("input_ids"));
                assertThat(LongStream.of(ids.toLongArray())).allMatch(v -> v >= 0 && v < 512);
                NDArray logits = r.load(m, "logits");
                assertThat(logits.getDataType()).isEqualTo(DataType.FLOAT32);
                assertThat(logits.getShape()).isEqualTo(new Shape(2, 24, 512));
                assertThat(logits.toFloatArray()).containsExactly(r.loadFloats("logits"));
                for (float loss : r.loadFloats("train_losses")) {
                    assertThat(loss).isPositive().isFinite();
                }
            }
        }
    }

    @Test
    void readsModelFixtureByFileAndByDirectory() {
        try (SafetensorsReader byFile = SafetensorsReader.open(MODEL);
                SafetensorsReader byDir = SafetensorsReader.open(MODEL.getParent())) {
            assertThat(byFile.keys()).hasSize(21).contains("lm_head.weight", "model.norm.weight");
            assertThat(new ArrayList<>(byFile.keys())).isSorted();
            assertThat(byFile.metadata()).containsEntry("format", "pt");
            TensorInfo q = byFile.info("model.layers.0.self_attn.q_proj.weight");
            assertThat(q.shape()).containsExactly(64, 64);
            assertThat(q.numel()).isEqualTo(4096);
            assertThat(q.byteLength()).isEqualTo(4096 * 4);
            assertThat(byDir.keys()).isEqualTo(byFile.keys());
            assertThat(byDir.info("lm_head.weight")).isEqualTo(byFile.info("lm_head.weight"));
            assertThat(byFile.contains("nope")).isFalse();
            assertThatThrownBy(() -> byFile.info("nope"))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("'nope'")
                    .hasMessageContaining("model.safetensors");
        }
    }

    @ParameterizedTest
    @ValueSource(longs = {MappedFile.DEFAULT_WINDOW, 4096, 1000})
    void slicesEqualSlicesOfTheFullTensor(long window) {
        try (SafetensorsReader golden = SafetensorsReader.open(GOLDEN, window);
                SafetensorsReader model = SafetensorsReader.open(MODEL, window);
                NDManager m = manager.newSubManager()) {
            for (SafetensorsReader r : List.of(golden, model)) {
                for (String name : r.keys()) {
                    checkSlices(r, m, name);
                }
            }
        }
    }

    /** Every axis: the first half, the second half, a 1-wide slice and the full range. */
    private static void checkSlices(SafetensorsReader r, NDManager m, String name) {
        NDArray full = r.load(m, name);
        long[] shape = r.info(name).shape();
        for (int axis = 0; axis < shape.length; axis++) {
            long n = shape[axis];
            long[][] ranges = {{0, n / 2}, {n / 2, n - n / 2}, {n - 1, 1}, {0, n}, {n / 3, 0}};
            for (long[] range : ranges) {
                NDArray slice = r.loadSlice(m, name, axis, range[0], range[1]);
                NDArray expected = full.get(NDIndex.sliceAxis(axis, range[0], range[0] + range[1]));
                assertThat(slice.getShape()).as("%s axis %d %s", name, axis, range[0]).isEqualTo(expected.getShape());
                assertThat(slice.getDataType()).isEqualTo(full.getDataType());
                assertThat(slice.toByteBuffer()).as("%s axis %d from %d", name, axis, range[0])
                        .isEqualTo(expected.toByteBuffer());
            }
        }
    }

    @Test
    void tensorParallelShardsReassembleTheWeight() {
        try (SafetensorsReader r = SafetensorsReader.open(MODEL); NDManager m = manager.newSubManager()) {
            String name = "model.layers.1.mlp.gate_proj.weight"; // [160, 64]
            NDArray full = r.load(m, name);
            NDArray rows = r.loadSlice(m, name, 0, 0, 80).concat(r.loadSlice(m, name, 0, 80, 80), 0);
            NDArray cols = r.loadSlice(m, name, 1, 0, 32).concat(r.loadSlice(m, name, 1, 32, 32), 1);
            assertThat(rows.contentEquals(full)).isTrue();
            assertThat(cols.contentEquals(full)).isTrue();
        }
    }

    @Test
    void bf16WidensToExactFloat32() throws IOException {
        int[] bits = {0x3F80, 0xBF80, 0x4049, 0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC1, 0x0001, 0x7F7F, 0xC2F7};
        String header = "{\"w\":{\"dtype\":\"BF16\",\"shape\":[" + bits.length + "],\"data_offsets\":[0,"
                + 2 * bits.length + "]}}";
        Path file = craft(tmp.resolve("bf16.safetensors"), header, shorts(bits));
        try (SafetensorsReader r = SafetensorsReader.open(file); NDManager m = manager.newSubManager()) {
            NDArray a = r.load(m, "w");
            assertThat(a.getDataType()).isEqualTo(DataType.FLOAT32);
            float[] loaded = a.toFloatArray();
            float[] helper = r.loadFloats("w");
            for (int i = 0; i < bits.length; i++) {
                assertThat(Float.floatToRawIntBits(loaded[i])).as("element %d", i).isEqualTo(bits[i] << 16);
                assertThat(Float.floatToRawIntBits(helper[i])).isEqualTo(bits[i] << 16);
            }
            assertThat(r.loadSlice(m, "w", 0, 2, 3).toFloatArray())
                    .containsExactly(Float.intBitsToFloat(0x4049 << 16), 0f, -0f);
        }
    }

    @Test
    void bf16MatrixSlicesAcrossTinyWindows() throws IOException {
        int rows = 5;
        int cols = 7;
        int[] bits = new int[rows * cols];
        for (int i = 0; i < bits.length; i++) {
            bits[i] = Float.floatToRawIntBits(i - 10.5f) >>> 16;
        }
        // An odd header length puts the data at odd file offsets, so elements straddle 5-byte windows.
        String header = "{\"m\":{\"dtype\":\"BF16\",\"shape\":[5,7],\"data_offsets\":[0,70]}}";
        String pad = header.length() % 2 == 0 ? " " : "";
        Path file = craft(tmp.resolve("odd.safetensors"), header + pad, shorts(bits));
        try (SafetensorsReader r = SafetensorsReader.open(file, 5); NDManager m = manager.newSubManager()) {
            assertThat(r.info("m").dataStart() % 2).isEqualTo(1);
            NDArray full = r.load(m, "m");
            assertThat(full.toFloatArray()[3]).isEqualTo(-7.5f);
            NDArray slice = r.loadSlice(m, "m", 1, 2, 3);
            assertThat(slice.contentEquals(full.get(":, 2:5"))).isTrue();
        }
    }

    @Test
    void i16WidensToInt32WithSign() throws IOException {
        String header = "{\"s\":{\"dtype\":\"I16\",\"shape\":[2,2],\"data_offsets\":[0,8]}}";
        Path file = craft(tmp.resolve("i16.safetensors"), header, shorts(-32768, -1, 0, 32767));
        try (SafetensorsReader r = SafetensorsReader.open(file); NDManager m = manager.newSubManager()) {
            NDArray a = r.load(m, "s");
            assertThat(a.getDataType()).isEqualTo(DataType.INT32);
            assertThat(a.toIntArray()).containsExactly(-32768, -1, 0, 32767);
            assertThat(r.loadSlice(m, "s", 1, 1, 1).toIntArray()).containsExactly(-1, 32767);
            assertThat(r.loadLongs("s")).containsExactly(-32768, -1, 0, 32767);
        }
    }

    @Test
    void f16LoadsAsFloat16AndConvertsExactly() throws IOException {
        // 1, -2, 65504 (max), 2^-24 (smallest subnormal), inf, 0.333 rounded
        int[] bits = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00, 0x3555};
        String header = "{\"h\":{\"dtype\":\"F16\",\"shape\":[6],\"data_offsets\":[0,12]}}";
        Path file = craft(tmp.resolve("f16.safetensors"), header, shorts(bits));
        try (SafetensorsReader r = SafetensorsReader.open(file); NDManager m = manager.newSubManager()) {
            NDArray a = r.load(m, "h");
            assertThat(a.getDataType()).isEqualTo(DataType.FLOAT16);
            float[] viaTorch = a.toType(DataType.FLOAT32, false).toFloatArray();
            assertThat(r.loadFloats("h")).containsExactly(viaTorch);
            assertThat(viaTorch).startsWith(1f, -2f, 65504f, 0x1p-24f, Float.POSITIVE_INFINITY);
        }
    }

    @Test
    void scalarAndZeroSizeTensors() throws IOException {
        String header = "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                + "\"e\":{\"dtype\":\"I64\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
                + "\"z\":{\"dtype\":\"BF16\",\"shape\":[0],\"data_offsets\":[0,0]}}";
        Path file = craft(tmp.resolve("edge.safetensors"), header, floats(2.5f));
        try (SafetensorsReader r = SafetensorsReader.open(file); NDManager m = manager.newSubManager()) {
            NDArray s = r.load(m, "s");
            assertThat(s.getShape()).isEqualTo(new Shape());
            assertThat(s.getFloat()).isEqualTo(2.5f);
            NDArray e = r.load(m, "e");
            assertThat(e.getShape()).isEqualTo(new Shape(3, 0));
            assertThat(e.getDataType()).isEqualTo(DataType.INT64);
            assertThat(r.loadSlice(m, "e", 0, 1, 2).getShape()).isEqualTo(new Shape(2, 0));
            assertThat(r.load(m, "z").getDataType()).isEqualTo(DataType.FLOAT32);
            assertThat(r.loadFloats("z")).isEmpty();
            assertThatThrownBy(() -> r.loadSlice(m, "s", 0, 0, 1))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("rank 0");
        }
    }

    @Test
    void rejectsBadSliceArguments() {
        try (SafetensorsReader r = SafetensorsReader.open(GOLDEN)) {
            assertThatThrownBy(() -> r.loadSlice(manager, "logits", 3, 0, 1))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("axis 3");
            assertThatThrownBy(() -> r.loadSlice(manager, "logits", 1, 20, 5))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("[20, 25)")
                    .hasMessageContaining("size 24");
            assertThatThrownBy(() -> r.loadSlice(manager, "logits", 1, -1, 1))
                    .isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> r.loadLongs("logits"))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("F32");
            assertThatThrownBy(() -> r.loadFloats("input_ids"))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("I64");
        }
    }

    @Test
    void closedReaderRefusesLoads() {
        SafetensorsReader r = SafetensorsReader.open(GOLDEN);
        r.close();
        r.close(); // idempotent
        assertThat(r.keys()).isNotEmpty(); // the header stays available
        assertThatThrownBy(() -> r.loadFloats("train_losses"))
                .isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("closed");
    }

    @Test
    void readsShardedCheckpointWrittenInTwoFiles() throws IOException {
        Path dir = Files.createDirectory(tmp.resolve("sharded"));
        try (SafetensorsReader original = SafetensorsReader.open(MODEL); NDManager m = manager.newSubManager()) {
            Map<String, NDArray> first = new LinkedHashMap<>();
            Map<String, NDArray> second = new LinkedHashMap<>();
            StringBuilder weightMap = new StringBuilder();
            for (String name : original.keys()) {
                boolean inFirst = !name.startsWith("model.layers.1");
                (inFirst ? first : second).put(name, original.load(m, name));
                String shard = inFirst ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
                weightMap.append(weightMap.length() == 0 ? "" : ",")
                        .append('"').append(name).append("\":\"").append(shard).append('"');
            }
            SafetensorsWriter.write(dir.resolve("model-00001-of-00002.safetensors"), first, Map.of("format", "pt"));
            SafetensorsWriter.write(dir.resolve("model-00002-of-00002.safetensors"), second, Map.of("shard", "2"));
            Files.writeString(dir.resolve("model.safetensors.index.json"),
                    "{\"metadata\":{\"total_size\":607488},\"weight_map\":{" + weightMap + "}}");

            for (Path path : List.of(dir, dir.resolve("model.safetensors.index.json"))) {
                try (SafetensorsReader sharded = SafetensorsReader.open(path)) {
                    assertThat(sharded.keys()).isEqualTo(original.keys());
                    assertThat(sharded.metadata()).containsEntry("format", "pt")
                            .containsEntry("shard", "2").containsEntry("total_size", "607488");
                    assertThat(sharded.info("model.layers.1.mlp.up_proj.weight").file().getFileName())
                            .hasToString("model-00002-of-00002.safetensors");
                    for (String name : original.keys()) {
                        assertThat(sharded.loadFloats(name)).as(name).containsExactly(original.loadFloats(name));
                    }
                    NDArray slice = sharded.loadSlice(m, "model.layers.1.self_attn.o_proj.weight", 1, 16, 16);
                    assertThat(slice.contentEquals(
                            original.load(m, "model.layers.1.self_attn.o_proj.weight").get(":, 16:32"))).isTrue();
                }
            }
        }
    }

    @Test
    void headerPaddedWithSpacesAndUnalignedLengthsAreAccepted() throws IOException {
        String header = "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
        for (String pad : List.of("", " ", "       ")) {
            Path file = craft(tmp.resolve("pad" + pad.length() + ".safetensors"), header + pad, floats(1f, 2f));
            try (SafetensorsReader r = SafetensorsReader.open(file)) {
                assertThat(r.loadFloats("a")).containsExactly(1f, 2f);
                assertThat(r.metadata()).containsExactly(Map.entry("k", "v"));
            }
        }
    }

    @Test
    void offsetsPastFourGigabytesInASparseFile() throws IOException {
        // The "far" tensor straddles the 4 GiB mapping-window boundary; the file is sparse.
        long dataStart = 8 + 256;
        long far = (4L << 30) - 8 - dataStart;
        String header = "{\"huge\":{\"dtype\":\"U8\",\"shape\":[3000000000],\"data_offsets\":[0,3000000000]},"
                + "\"far\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[" + far + "," + (far + 16) + "]}}";
        Path file = tmp.resolve("sparse.safetensors");
        craft(file, header + " ".repeat(256 - header.length()), new byte[0]);
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.wrap(floats(1.5f, -2f, 3f, 4.25f)), dataStart + far);
        }
        try (SafetensorsReader r = SafetensorsReader.open(file); NDManager m = manager.newSubManager()) {
            assertThat(r.info("far").dataStart()).isEqualTo((4L << 30) - 8);
            assertThat(r.loadFloats("far")).containsExactly(1.5f, -2f, 3f, 4.25f);
            assertThat(r.loadSlice(m, "far", 1, 1, 1).toFloatArray()).containsExactly(-2f, 4.25f);
            assertThat(r.loadSlice(m, "huge", 0, 3_000_000_000L - 5, 5).toUint8Array()).containsOnly(0);
            assertThatThrownBy(() -> r.load(m, "huge"))
                    .isInstanceOf(SafetensorsException.class)
                    .hasMessageContaining("tensor 'huge' needs 3000000000 bytes")
                    .hasMessageContaining("loadSlice");
        }
    }
}
