package org.djlmegatron.io;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import com.google.gson.Strictness;
import com.google.gson.stream.JsonReader;
import com.google.gson.stream.JsonToken;

import java.io.IOException;
import java.io.StringReader;
import java.math.BigInteger;
import java.util.HashSet;
import java.util.Set;

/** Strict JSON helpers shared by the header and index parsers. */
final class Json {

    private Json() {}

    /**
     * Parses a top-level JSON object strictly (Gson's default is lenient) and rejects duplicate
     * top-level keys, which Gson would otherwise resolve silently as "last one wins".
     *
     * @param where what is parsed, naming the file; starts every error message
     */
    static JsonObject parseObject(String text, String where) {
        try (JsonReader reader = new JsonReader(new StringReader(text))) {
            reader.setStrictness(Strictness.STRICT);
            if (reader.peek() != JsonToken.BEGIN_OBJECT) {
                throw new SafetensorsException(
                        where + " is not valid JSON: expected a top-level object, found " + reader.peek());
            }
            JsonObject result = new JsonObject();
            Set<String> seen = new HashSet<>();
            reader.beginObject();
            while (reader.hasNext()) {
                String key = reader.nextName();
                if (!seen.add(key)) {
                    throw new SafetensorsException(where + " has duplicate key '" + key + "'");
                }
                result.add(key, JsonParser.parseReader(reader));
            }
            reader.endObject();
            if (reader.peek() != JsonToken.END_DOCUMENT) {
                throw new SafetensorsException(where + " is not valid JSON: trailing data after the object");
            }
            return result;
        } catch (IOException | JsonParseException | IllegalStateException e) {
            throw new SafetensorsException(where + " is not valid JSON: " + e.getMessage(), e);
        }
    }

    /** Reads a JSON number as a non-negative long, or returns null when it is not one. */
    static Long nonNegativeLong(JsonElement e) {
        BigInteger v = integer(e);
        return v == null || v.signum() < 0 || v.bitLength() > 63 ? null : v.longValue();
    }

    /** Reads a JSON integer literal ("3", not "3.0" or "3e0"), or returns null when it is not one. */
    static BigInteger integer(JsonElement e) {
        if (e == null || !e.isJsonPrimitive() || !e.getAsJsonPrimitive().isNumber()) {
            return null;
        }
        String text = e.getAsJsonPrimitive().getAsNumber().toString();
        try {
            return new BigInteger(text);
        } catch (NumberFormatException ex) {
            return null;
        }
    }

    /** A short rendering of a value for error messages. */
    static String show(JsonElement e) {
        if (e == null) {
            return "nothing";
        }
        String s = e.toString();
        return s.length() > 80 ? s.substring(0, 77) + "..." : s;
    }
}
