package org.djlmegatron.io;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;

import java.io.EOFException;
import java.io.IOException;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The parsed and fully validated header of one {@code .safetensors} file.
 *
 * <p>Validation follows the Rust reference implementation, except that gaps between tensors and
 * trailing bytes after the last one are tolerated (they are harmless); overlapping ranges,
 * ranges past the data section and size mismatches are errors.
 *
 * @param file the file
 * @param dataStart absolute offset of the data section ({@code 8 + header length})
 * @param tensors tensors in header order
 * @param metadata the {@code __metadata__} map, empty when absent
 */
record SafetensorsHeader(
        Path file, long dataStart, Map<String, TensorInfo> tensors, Map<String, String> metadata) {

    /** Same limit as the Rust implementation: a larger header is corruption, not a model. */
    static final long MAX_HEADER_BYTES = 100_000_000L;

    static final String METADATA_KEY = "__metadata__";

    /** Reads and validates the header of an open file. */
    static SafetensorsHeader read(Path file, FileChannel channel) throws IOException {
        long fileSize = channel.size();
        if (fileSize < 8) {
            throw new SafetensorsException(file + ": file is " + fileSize
                    + " bytes, shorter than the 8-byte header length prefix");
        }
        ByteBuffer prefix = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
        readFully(channel, prefix, 0);
        long headerLength = prefix.getLong(0);
        // Compare unsigned: a u64 with the top bit set reads as negative.
        if (headerLength < 0 || headerLength > MAX_HEADER_BYTES) {
            throw new SafetensorsException(file + ": header length " + Long.toUnsignedString(headerLength)
                    + " exceeds the limit of " + MAX_HEADER_BYTES + " bytes");
        }
        if (headerLength > fileSize - 8) {
            throw new SafetensorsException(file + ": header length " + headerLength
                    + " runs past the end of the file: expected at most " + (fileSize - 8)
                    + " bytes after the 8-byte prefix, found file size " + fileSize);
        }
        ByteBuffer raw = ByteBuffer.allocate((int) headerLength);
        readFully(channel, raw, 8);
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(raw.flip())
                    .toString();
        } catch (CharacterCodingException e) {
            throw new SafetensorsException(file + ": header is not valid UTF-8", e);
        }
        long dataStart = 8 + headerLength;
        return parse(file, text, dataStart, fileSize - dataStart);
    }

    private static SafetensorsHeader parse(Path file, String text, long dataStart, long dataLength) {
        JsonObject root = Json.parseObject(text, file + ": header");
        Map<String, TensorInfo> tensors = new LinkedHashMap<>();
        Map<String, String> metadata = Map.of();
        for (Map.Entry<String, JsonElement> e : root.entrySet()) {
            if (e.getKey().equals(METADATA_KEY)) {
                metadata = parseMetadata(file, e.getValue());
            } else {
                tensors.put(e.getKey(), parseTensor(file, e.getKey(), e.getValue(), dataStart, dataLength));
            }
        }
        checkNoOverlap(file, tensors.values(), dataStart);
        return new SafetensorsHeader(
                file, dataStart, Collections.unmodifiableMap(tensors), metadata);
    }

    private static Map<String, String> parseMetadata(Path file, JsonElement value) {
        String where = file + ": field '" + METADATA_KEY + "'";
        if (!value.isJsonObject()) {
            throw new SafetensorsException(where + ": expected an object of strings, found " + Json.show(value));
        }
        Map<String, String> out = new LinkedHashMap<>();
        for (Map.Entry<String, JsonElement> m : value.getAsJsonObject().entrySet()) {
            JsonElement v = m.getValue();
            if (!v.isJsonPrimitive() || !v.getAsJsonPrimitive().isString()) {
                throw new SafetensorsException(where + " key '" + m.getKey()
                        + "': expected a string value, found " + Json.show(v));
            }
            out.put(m.getKey(), v.getAsString());
        }
        return Collections.unmodifiableMap(out);
    }

    private static TensorInfo parseTensor(
            Path file, String name, JsonElement value, long dataStart, long dataLength) {
        String where = file + ": tensor '" + name + "'";
        if (!value.isJsonObject()) {
            throw new SafetensorsException(where + ": expected an object with dtype, shape and data_offsets, found "
                    + Json.show(value));
        }
        JsonObject o = value.getAsJsonObject();
        SafetensorsDType dtype = parseDType(where, o.get("dtype"));
        long[] shape = parseShape(where, o.get("shape"));
        long[] offsets = parseOffsets(where, o.get("data_offsets"));

        long numel = 1;
        long expectedBytes;
        try {
            for (long d : shape) {
                numel = Math.multiplyExact(numel, d);
            }
            expectedBytes = Math.multiplyExact(numel, (long) dtype.elementSize());
        } catch (ArithmeticException ex) {
            throw new SafetensorsException(where + ": field 'shape' " + Arrays.toString(shape)
                    + " has more elements than fit in 63 bits");
        }
        long found = offsets[1] - offsets[0];
        if (found != expectedBytes) {
            throw new SafetensorsException(where + ": field 'data_offsets' [" + offsets[0] + ", " + offsets[1]
                    + "] disagrees with field 'shape' " + Arrays.toString(shape) + ": expected "
                    + expectedBytes + " bytes (" + numel + " x " + dtype.elementSize() + " for " + dtype.code()
                    + "), found " + found);
        }
        if (offsets[1] > dataLength) {
            throw new SafetensorsException(where + ": field 'data_offsets' end " + offsets[1]
                    + " is past the end of the data section: expected at most " + dataLength + ", found "
                    + offsets[1]);
        }
        return new TensorInfo(name, dtype, shape, file, dataStart + offsets[0], found);
    }

    private static SafetensorsDType parseDType(String where, JsonElement e) {
        if (e == null) {
            throw new SafetensorsException(where + ": field 'dtype' is missing");
        }
        if (!e.isJsonPrimitive() || !e.getAsJsonPrimitive().isString()) {
            throw new SafetensorsException(where + ": field 'dtype': expected a string, found " + Json.show(e));
        }
        SafetensorsDType d = SafetensorsDType.fromCode(e.getAsString());
        if (d == null) {
            throw new SafetensorsException(where + ": field 'dtype': unknown dtype \"" + e.getAsString()
                    + "\", expected one of " + SafetensorsDType.supportedCodes());
        }
        return d;
    }

    private static long[] parseShape(String where, JsonElement e) {
        if (e == null) {
            throw new SafetensorsException(where + ": field 'shape' is missing");
        }
        if (!e.isJsonArray()) {
            throw new SafetensorsException(where + ": field 'shape': expected an array of integers, found "
                    + Json.show(e));
        }
        JsonArray a = e.getAsJsonArray();
        long[] shape = new long[a.size()];
        for (int i = 0; i < shape.length; i++) {
            BigInteger v = Json.integer(a.get(i));
            if (v == null) {
                throw new SafetensorsException(where + ": field 'shape' dimension " + i
                        + ": expected an integer, found " + Json.show(a.get(i)));
            }
            if (v.signum() < 0) {
                throw new SafetensorsException(where + ": field 'shape' dimension " + i
                        + ": expected a non-negative size, found " + v);
            }
            if (v.bitLength() > 63) {
                throw new SafetensorsException(where + ": field 'shape' dimension " + i + ": " + v
                        + " does not fit in 63 bits");
            }
            shape[i] = v.longValue();
        }
        return shape;
    }

    private static long[] parseOffsets(String where, JsonElement e) {
        if (e == null) {
            throw new SafetensorsException(where + ": field 'data_offsets' is missing");
        }
        if (!e.isJsonArray() || e.getAsJsonArray().size() != 2) {
            throw new SafetensorsException(where + ": field 'data_offsets': expected [begin, end], found "
                    + Json.show(e));
        }
        Long begin = Json.nonNegativeLong(e.getAsJsonArray().get(0));
        Long end = Json.nonNegativeLong(e.getAsJsonArray().get(1));
        if (begin == null || end == null) {
            throw new SafetensorsException(where + ": field 'data_offsets': expected two non-negative integers, found "
                    + Json.show(e));
        }
        if (end < begin) {
            throw new SafetensorsException(where + ": field 'data_offsets': expected begin <= end, found ["
                    + begin + ", " + end + "]");
        }
        return new long[] {begin, end};
    }

    /** Empty tensors occupy no bytes and may share an offset with anything. */
    private static void checkNoOverlap(Path file, Iterable<TensorInfo> tensors, long dataStart) {
        List<TensorInfo> sorted = new ArrayList<>();
        tensors.forEach(t -> {
            if (t.byteLength() > 0) {
                sorted.add(t);
            }
        });
        sorted.sort(Comparator.comparingLong(TensorInfo::dataStart));
        for (int i = 1; i < sorted.size(); i++) {
            TensorInfo prev = sorted.get(i - 1);
            TensorInfo cur = sorted.get(i);
            long prevEnd = prev.dataStart() + prev.byteLength();
            if (cur.dataStart() < prevEnd) {
                throw new SafetensorsException(file + ": field 'data_offsets' of tensor '" + cur.name() + "' "
                        + range(cur, dataStart) + " overlaps tensor '" + prev.name() + "' "
                        + range(prev, dataStart));
            }
        }
    }

    private static String range(TensorInfo t, long dataStart) {
        long b = t.dataStart() - dataStart;
        return "[" + b + ", " + (b + t.byteLength()) + ")";
    }

    static void readFully(FileChannel channel, ByteBuffer dst, long position) throws IOException {
        long pos = position;
        while (dst.hasRemaining()) {
            int n = channel.read(dst, pos);
            if (n < 0) {
                throw new EOFException("unexpected end of file at offset " + pos);
            }
            pos += n;
        }
    }
}
