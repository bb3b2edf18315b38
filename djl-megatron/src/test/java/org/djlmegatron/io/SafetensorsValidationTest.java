package org.djlmegatron.io;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.djlmegatron.io.SafetensorsFiles.craft;
import static org.djlmegatron.io.SafetensorsFiles.floats;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;

import org.assertj.core.api.AbstractThrowableAssert;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** One test per validation rule: each error names the file and the offending field. */
class SafetensorsValidationTest {

    private static final String GOOD_A = "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";

    @TempDir
    Path tmp;

    private AbstractThrowableAssert<?, ? extends Throwable> assertOpenFails(Path file) {
        return assertThatThrownBy(() -> SafetensorsReader.open(file).close())
                .isInstanceOf(SafetensorsException.class)
                .hasMessageContaining(file.toString());
    }

    private Path crafted(String header, byte[] data) throws IOException {
        return craft(tmp.resolve("bad.safetensors"), header, data);
    }

    @Test
    void fileShorterThanLengthPrefix() throws IOException {
        Path file = Files.write(tmp.resolve("short.safetensors"), new byte[5]);
        assertOpenFails(file).hasMessageContaining("5 bytes").hasMessageContaining("8-byte header length");
    }

    @Test
    void headerLengthPastEndOfFile() throws IOException {
        ByteBuffer b = ByteBuffer.allocate(20).order(ByteOrder.LITTLE_ENDIAN).putLong(100);
        Path file = Files.write(tmp.resolve("trunc.safetensors"), b.array());
        assertOpenFails(file).hasMessageContaining("header length 100")
                .hasMessageContaining("expected at most 12")
                .hasMessageContaining("file size 20");
    }

    @Test
    void absurdHeaderLength() throws IOException {
        for (long length : new long[] {200_000_000L, -1L}) {
            ByteBuffer b = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(length);
            Path file = Files.write(tmp.resolve("huge.safetensors"), b.array());
            assertOpenFails(file).hasMessageContaining("header length " + Long.toUnsignedString(length))
                    .hasMessageContaining("limit of 100000000");
        }
    }

    @Test
    void invalidJson() throws IOException {
        assertOpenFails(crafted("{\"a\": {\"dtype\": \"F32\",", new byte[0]))
                .hasMessageContaining("header is not valid JSON");
        assertOpenFails(crafted("[1, 2]", new byte[0])).hasMessageContaining("top-level object");
        assertOpenFails(crafted("{" + GOOD_A + "} x", floats(1, 2))).hasMessageContaining("not valid JSON");
        assertOpenFails(crafted("{a:1}", new byte[0])).hasMessageContaining("not valid JSON");
    }

    @Test
    void invalidUtf8() throws IOException {
        byte[] h = {'{', '"', (byte) 0xC3, '"', ':', '1', '}', ' '};
        ByteBuffer b = ByteBuffer.allocate(8 + h.length).order(ByteOrder.LITTLE_ENDIAN).putLong(h.length).put(h);
        Path file = Files.write(tmp.resolve("utf.safetensors"), b.array());
        assertOpenFails(file).hasMessageContaining("UTF-8");
    }

    @Test
    void duplicateTensorName() throws IOException {
        assertOpenFails(crafted("{" + GOOD_A + "," + GOOD_A + "}", floats(1, 2)))
                .hasMessageContaining("duplicate key 'a'");
    }

    @Test
    void unknownDtypeIsNamed() throws IOException {
        assertOpenFails(crafted("{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", new byte[2]))
                .hasMessageContaining("tensor 'a'")
                .hasMessageContaining("field 'dtype'")
                .hasMessageContaining("\"F8_E4M3\"")
                .hasMessageContaining("BF16");
    }

    @Test
    void shapeAndOffsetsDisagree() throws IOException {
        assertOpenFails(crafted("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", floats(1, 2)))
                .hasMessageContaining("tensor 'a'")
                .hasMessageContaining("field 'data_offsets'")
                .hasMessageContaining("field 'shape' [3]")
                .hasMessageContaining("expected 12 bytes")
                .hasMessageContaining("found 8");
    }

    @Test
    void offsetsPastEndOfDataSection() throws IOException {
        assertOpenFails(crafted("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", floats(1, 2)))
                .hasMessageContaining("tensor 'a'")
                .hasMessageContaining("field 'data_offsets'")
                .hasMessageContaining("expected at most 8, found 12");
    }

    @Test
    void overlappingRanges() throws IOException {
        String header = "{" + GOOD_A + ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}";
        assertOpenFails(crafted(header, floats(1, 2, 3)))
                .hasMessageContaining("field 'data_offsets'")
                .hasMessageContaining("tensor 'b' [4, 12) overlaps tensor 'a' [0, 8)");
    }

    @Test
    void emptyTensorsMayShareOffsets() throws IOException {
        String header = "{" + GOOD_A + ",\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}";
        try (SafetensorsReader r = SafetensorsReader.open(crafted(header, floats(1, 2)))) {
            assertThat(r.keys()).containsExactly("a", "e");
        }
    }

    @Test
    void negativeDimension() throws IOException {
        assertOpenFails(crafted("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,8]}}", floats(1, 2)))
                .hasMessageContaining("tensor 'a'")
                .hasMessageContaining("field 'shape' dimension 1")
                .hasMessageContaining("found -1");
    }

    @Test
    void offsetsOutOfOrderOrNotIntegers() throws IOException {
        assertOpenFails(crafted("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", floats(1, 2)))
                .hasMessageContaining("field 'data_offsets'")
                .hasMessageContaining("begin <= end, found [8, 0]");
        assertOpenFails(crafted("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.5]}}", floats(1, 2)))
                .hasMessageContaining("field 'data_offsets'")
                .hasMessageContaining("non-negative integers");
        assertOpenFails(crafted("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", floats(1, 2)))
                .hasMessageContaining("field 'shape' dimension 0: expected an integer, found 2.0");
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
        "dtype        | {\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}",
        "shape        | {\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}",
        "data_offsets | {\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}",
    })
    void missingField(String field, String header) throws IOException {
        assertOpenFails(crafted(header, floats(1, 2)))
                .hasMessageContaining("tensor 'a'")
                .hasMessageContaining("field '" + field + "' is missing");
    }

    @Test
    void wrongFieldTypes() throws IOException {
        assertOpenFails(crafted("{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", floats(1, 2)))
                .hasMessageContaining("field 'dtype': expected a string, found 4");
        assertOpenFails(crafted("{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", floats(1, 2)))
                .hasMessageContaining("field 'shape': expected an array");
        assertOpenFails(crafted("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", floats(1, 2)))
                .hasMessageContaining("field 'data_offsets': expected [begin, end], found [0]");
        assertOpenFails(crafted("{\"a\":[1]}", floats(1, 2))).hasMessageContaining("tensor 'a'");
    }

    @Test
    void metadataMustMapStringsToStrings() throws IOException {
        assertOpenFails(crafted("{\"__metadata__\":{\"n\":1}," + GOOD_A + "}", floats(1, 2)))
                .hasMessageContaining("field '__metadata__' key 'n'")
                .hasMessageContaining("expected a string value, found 1");
    }

    @Test
    void shapeWhoseElementCountOverflows() throws IOException {
        String header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}";
        assertOpenFails(crafted(header, floats(1, 2))).hasMessageContaining("field 'shape'")
                .hasMessageContaining("63 bits");
    }

    @Test
    void missingFileAndEmptyDirectory() throws IOException {
        Path missing = tmp.resolve("missing.safetensors");
        assertOpenFails(missing).hasMessageContaining("no such file");
        Path dir = Files.createDirectory(tmp.resolve("empty"));
        assertOpenFails(dir).hasMessageContaining("neither model.safetensors nor model.safetensors.index.json");
    }

    // ---- sharded index ----

    private Path shardedDir(String indexJson) throws IOException {
        Path dir = Files.createDirectories(tmp.resolve("sharded"));
        craft(dir.resolve("model-00001-of-00001.safetensors"), "{" + GOOD_A + "}", floats(1, 2));
        Files.writeString(dir.resolve("model.safetensors.index.json"), indexJson);
        return dir;
    }

    @Test
    void indexNamingMissingShard() throws IOException {
        Path dir = shardedDir("{\"weight_map\":{\"a\":\"model-00001-of-00001.safetensors\","
                + "\"b\":\"model-00002-of-00002.safetensors\"}}");
        assertOpenFails(dir)
                .hasMessageContaining(dir.resolve("model.safetensors.index.json").toString())
                .hasMessageContaining("field 'weight_map' tensor 'b'")
                .hasMessageContaining("model-00002-of-00002.safetensors does not exist");
    }

    @Test
    void indexNamingTensorAbsentFromShard() throws IOException {
        Path dir = shardedDir("{\"weight_map\":{\"a\":\"model-00001-of-00001.safetensors\","
                + "\"zz\":\"model-00001-of-00001.safetensors\"}}");
        assertOpenFails(dir)
                .hasMessageContaining("model.safetensors.index.json")
                .hasMessageContaining("field 'weight_map' tensor 'zz'")
                .hasMessageContaining("model-00001-of-00001.safetensors, but that file has no such tensor");
    }

    @Test
    void indexWithoutWeightMapOrInvalid() throws IOException {
        assertOpenFails(shardedDir("{\"metadata\":{}}").resolve("model.safetensors.index.json"))
                .hasMessageContaining("field 'weight_map' is missing");
        assertOpenFails(shardedDir("{\"weight_map\":").resolve("model.safetensors.index.json"))
                .hasMessageContaining("not valid JSON");
        assertOpenFails(shardedDir("{\"weight_map\":{\"a\":\"../outside.safetensors\"}}"))
                .hasMessageContaining("tensor 'a'")
                .hasMessageContaining("not a file in the index's directory");
    }

    @Test
    void badShardIsReportedWithItsOwnName() throws IOException {
        Path dir = shardedDir("{\"weight_map\":{\"a\":\"model-00001-of-00001.safetensors\"}}");
        Files.write(dir.resolve("model-00001-of-00001.safetensors"), new byte[3]);
        assertOpenFails(dir).hasMessageContaining(dir.resolve("model-00001-of-00001.safetensors").toString())
                .hasMessageContaining("3 bytes");
    }
}
