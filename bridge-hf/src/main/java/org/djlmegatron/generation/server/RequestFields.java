package org.djlmegatron.generation.server;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.Gson;
import com.google.gson.TypeAdapter;
import com.google.gson.stream.JsonReader;
import com.google.gson.stream.JsonToken;
import java.io.IOException;
import java.io.StringReader;
import com.google.gson.JsonPrimitive;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.djlmegatron.generation.InvalidRequestException;
import org.djlmegatron.generation.TextGenerator;

/** Typed reads of a JSON request body; each wrong field is an {@link InvalidRequestException} naming it. */
final class RequestFields {

    private static final TypeAdapter<JsonElement> STRICT = new Gson().getAdapter(JsonElement.class);

    private final JsonObject body;

    private RequestFields(JsonObject body) {
        this.body = body;
    }

    static RequestFields parse(String text, Set<String> known) {
        JsonElement e;
        try (JsonReader reader = new JsonReader(new StringReader(text))) {
            reader.setLenient(false); // gson's JsonParser would accept unquoted names and single quotes
            e = STRICT.read(reader);
            if (reader.peek() != JsonToken.END_DOCUMENT) {
                throw new InvalidRequestException("malformed JSON: data after the object");
            }
        } catch (JsonParseException | IOException | IllegalStateException ex) {
            throw new InvalidRequestException("malformed JSON: " + firstLine(ex.getMessage()));
        }
        if (e == null || e.isJsonNull()) {
            throw new InvalidRequestException("the request body must be a JSON object, found nothing");
        }
        if (!e.isJsonObject()) {
            throw new InvalidRequestException("the request body must be a JSON object, found "
                    + (text.isBlank() ? "nothing" : abbreviate(e.toString())));
        }
        for (String key : e.getAsJsonObject().keySet()) {
            if (!known.contains(key)) {
                throw new InvalidRequestException("unknown field \"" + key + "\"; accepted: " + String.join(", ", known));
            }
        }
        return new RequestFields(e.getAsJsonObject());
    }

    boolean has(String field) {
        return body.has(field) && !body.get(field).isJsonNull();
    }

    JsonElement raw(String field) {
        return body.get(field);
    }

    int integer(String field, int dflt, int min, int max) {
        if (!has(field)) {
            return dflt;
        }
        JsonElement e = body.get(field);
        if (!isNumber(e) || e.getAsDouble() != Math.rint(e.getAsDouble())) {
            throw new InvalidRequestException(field + " must be an integer, found " + abbreviate(e.toString()));
        }
        double v = e.getAsDouble();
        if (v < min || v > max) {
            throw new InvalidRequestException(field + " must be in [" + min + ", " + max + "], found " + e);
        }
        return (int) v;
    }

    long longValue(String field, long dflt) {
        if (!has(field)) {
            return dflt;
        }
        JsonElement e = body.get(field);
        if (!isNumber(e) || e.getAsDouble() != Math.rint(e.getAsDouble())) {
            throw new InvalidRequestException(field + " must be an integer, found " + abbreviate(e.toString()));
        }
        return e.getAsLong();
    }

    double number(String field, double dflt) {
        if (!has(field)) {
            return dflt;
        }
        JsonElement e = body.get(field);
        if (!isNumber(e)) {
            throw new InvalidRequestException(field + " must be a number, found " + abbreviate(e.toString()));
        }
        return e.getAsDouble();
    }

    boolean bool(String field, boolean dflt) {
        if (!has(field)) {
            return dflt;
        }
        JsonElement e = body.get(field);
        if (!e.isJsonPrimitive() || !e.getAsJsonPrimitive().isBoolean()) {
            throw new InvalidRequestException(field + " must be true or false, found " + abbreviate(e.toString()));
        }
        return e.getAsBoolean();
    }

    /**
     * Prompts as token ids: a string, a list of strings (through the tokenizer), a list of ids, or
     * a list of lists of ids. {@code texts} receives each prompt's text, or null for ids.
     */
    List<long[]> prompts(String field, TextGenerator gen, List<String> texts) {
        if (!has(field)) {
            throw new InvalidRequestException(field + " is required");
        }
        JsonElement e = body.get(field);
        List<JsonElement> items = new ArrayList<>();
        if (e.isJsonArray() && e.getAsJsonArray().size() > 0 && isNumber(e.getAsJsonArray().get(0))) {
            items.add(e); // one prompt as ids
        } else if (e.isJsonArray()) {
            e.getAsJsonArray().forEach(items::add);
        } else {
            items.add(e);
        }
        if (items.isEmpty()) {
            throw new InvalidRequestException(field + " is empty");
        }
        List<long[]> out = new ArrayList<>();
        for (int i = 0; i < items.size(); i++) {
            JsonElement p = items.get(i);
            String where = field + (items.size() > 1 ? "[" + i + "]" : "");
            if (p.isJsonPrimitive() && p.getAsJsonPrimitive().isString()) {
                String text = p.getAsString();
                if (text.isEmpty()) {
                    throw new InvalidRequestException(where + " is an empty prompt");
                }
                out.add(gen.encode(text));
                texts.add(text);
            } else if (p.isJsonArray()) {
                out.add(ids(p.getAsJsonArray(), where));
                texts.add(null);
            } else {
                throw new InvalidRequestException(where + " must be a string or a list of token ids, found "
                        + abbreviate(p.toString()));
            }
        }
        return out;
    }

    private static long[] ids(JsonArray a, String where) {
        if (a.size() == 0) {
            throw new InvalidRequestException(where + " is an empty prompt");
        }
        long[] ids = new long[a.size()];
        for (int i = 0; i < ids.length; i++) {
            JsonElement x = a.get(i);
            if (!isNumber(x) || x.getAsDouble() != Math.rint(x.getAsDouble())) {
                throw new InvalidRequestException(where + "[" + i + "] must be a token id, found " + abbreviate(x.toString()));
            }
            ids[i] = x.getAsLong();
        }
        return ids;
    }

    private static boolean isNumber(JsonElement e) {
        return e.isJsonPrimitive() && ((JsonPrimitive) e).isNumber();
    }

    private static String abbreviate(String s) {
        return s.length() > 60 ? s.substring(0, 57) + "..." : s;
    }

    private static String firstLine(String s) {
        if (s == null) {
            return "unparseable";
        }
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }
}
