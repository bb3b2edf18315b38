package org.djlmegatron.io;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A parsed {@code model.safetensors.index.json}: which shard file holds each tensor.
 *
 * @param indexFile the index file
 * @param weightMap tensor name to shard file (resolved against the index's directory), in file order
 * @param metadata the index's {@code metadata} object, values rendered as strings (HF writes
 *     {@code total_size} as a number)
 */
record ShardIndex(Path indexFile, Map<String, Path> weightMap, Map<String, String> metadata) {

    static final String INDEX_NAME = "model.safetensors.index.json";

    static ShardIndex read(Path indexFile) throws IOException {
        long size = Files.size(indexFile);
        if (size > SafetensorsHeader.MAX_HEADER_BYTES) {
            throw new SafetensorsException(indexFile + ": index file is " + size + " bytes, more than the limit of "
                    + SafetensorsHeader.MAX_HEADER_BYTES);
        }
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(Files.readAllBytes(indexFile)))
                    .toString();
        } catch (CharacterCodingException e) {
            throw new SafetensorsException(indexFile + ": index is not valid UTF-8", e);
        }
        JsonObject root = Json.parseObject(text, indexFile.toString());
        return new ShardIndex(indexFile, parseWeightMap(indexFile, root.get("weight_map")),
                parseMetadata(indexFile, root.get("metadata")));
    }

    private static Map<String, Path> parseWeightMap(Path indexFile, JsonElement e) {
        if (e == null) {
            throw new SafetensorsException(indexFile + ": field 'weight_map' is missing");
        }
        if (!e.isJsonObject()) {
            throw new SafetensorsException(indexFile + ": field 'weight_map': expected an object, found "
                    + Json.show(e));
        }
        Path dir = indexFile.toAbsolutePath().normalize().getParent();
        Map<String, Path> out = new LinkedHashMap<>();
        for (Map.Entry<String, JsonElement> m : e.getAsJsonObject().entrySet()) {
            String where = indexFile + ": field 'weight_map' tensor '" + m.getKey() + "'";
            JsonElement v = m.getValue();
            if (!v.isJsonPrimitive() || !v.getAsJsonPrimitive().isString()) {
                throw new SafetensorsException(where + ": expected a shard file name, found " + Json.show(v));
            }
            Path shard;
            try {
                shard = dir.resolve(v.getAsString()).normalize();
            } catch (InvalidPathException ex) {
                throw new SafetensorsException(where + ": invalid shard file name \"" + v.getAsString() + "\"", ex);
            }
            // A checkpoint must not point readers at files outside its own directory.
            if (!shard.getParent().equals(dir)) {
                throw new SafetensorsException(where + ": shard \"" + v.getAsString()
                        + "\" is not a file in the index's directory " + dir);
            }
            out.put(m.getKey(), shard);
        }
        return Collections.unmodifiableMap(out);
    }

    private static Map<String, String> parseMetadata(Path indexFile, JsonElement e) {
        if (e == null || e.isJsonNull()) {
            return Map.of();
        }
        if (!e.isJsonObject()) {
            throw new SafetensorsException(indexFile + ": field 'metadata': expected an object, found " + Json.show(e));
        }
        Map<String, String> out = new LinkedHashMap<>();
        for (Map.Entry<String, JsonElement> m : e.getAsJsonObject().entrySet()) {
            JsonElement v = m.getValue();
            out.put(m.getKey(), v.isJsonPrimitive() ? v.getAsString() : v.toString());
        }
        return Collections.unmodifiableMap(out);
    }
}
