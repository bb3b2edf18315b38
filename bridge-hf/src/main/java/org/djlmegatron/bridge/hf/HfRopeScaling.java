package org.djlmegatron.bridge.hf;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import java.nio.file.Path;
import org.djlmegatron.transformer.RopeScaling;

/**
 * Rope scaling in a Hugging Face {@code config.json}: transformers 5 writes it into
 * {@code rope_parameters} (with {@code rope_theta}), older versions into {@code rope_scaling}
 * (type under {@code rope_type}, or {@code type} before 4.45). Types {@code default},
 * {@code linear} and {@code llama3} are read; any other is refused with the field named.
 */
public final class HfRopeScaling {

    private static final String[] KEYS = {"rope_parameters", "rope_scaling"};

    private HfRopeScaling() {}

    /** The scaling of {@code json}, or null for none; {@code file} names the source in errors. */
    public static RopeScaling read(Path file, JsonObject json) {
        RopeScaling found = null;
        String foundIn = null;
        for (String key : KEYS) {
            JsonElement e = json.get(key);
            if (e == null || !e.isJsonObject()) {
                continue;
            }
            RopeScaling s = parse(file, key, e.getAsJsonObject());
            if (s != null && found != null && !s.equals(found)) {
                throw new HfFormatException(file + ": " + foundIn + " and " + key + " disagree: " + found + " vs " + s);
            }
            if (s != null && found == null) {
                found = s;
                foundIn = key;
            }
        }
        return found;
    }

    /** Both spellings of {@code s} (null: {@code rope_parameters} of type default only). */
    public static void write(JsonObject config, double ropeTheta, RopeScaling s) {
        JsonObject params = new JsonObject();
        params.addProperty("rope_theta", ropeTheta);
        if (s == null) {
            params.addProperty("rope_type", "default");
            config.add("rope_parameters", params);
            return;
        }
        JsonObject legacy = fields(s);
        fields(s).entrySet().forEach(en -> params.add(en.getKey(), en.getValue()));
        config.add("rope_parameters", params);
        config.add("rope_scaling", legacy);
    }

    private static JsonObject fields(RopeScaling s) {
        JsonObject o = new JsonObject();
        o.addProperty("rope_type", s.type().hfName());
        o.addProperty("factor", s.factor());
        if (s.type() == RopeScaling.Type.LLAMA3) {
            o.addProperty("low_freq_factor", s.lowFreqFactor());
            o.addProperty("high_freq_factor", s.highFreqFactor());
            o.addProperty("original_max_position_embeddings", s.originalMaxPositionEmbeddings());
        }
        return o;
    }

    private static RopeScaling parse(Path file, String key, JsonObject o) {
        JsonElement t = o.has("rope_type") ? o.get("rope_type") : o.get("type");
        String type = t == null || t.isJsonNull() ? "default" : t.getAsString();
        try {
            return switch (type) {
                case "default" -> null;
                case "linear" -> RopeScaling.linear(number(file, key, o, "factor"));
                case "llama3" -> RopeScaling.llama3(number(file, key, o, "factor"),
                        number(file, key, o, "low_freq_factor"), number(file, key, o, "high_freq_factor"),
                        (int) number(file, key, o, "original_max_position_embeddings"));
                default -> throw new HfFormatException(file + ": " + key + ".rope_type = " + type
                        + " is not supported (expected default, linear or llama3)");
            };
        } catch (IllegalArgumentException e) {
            throw new HfFormatException(file + ": " + key + ": " + e.getMessage(), e);
        }
    }

    private static double number(Path file, String key, JsonObject o, String field) {
        JsonElement e = o.get(field);
        if (e == null || e.isJsonNull() || !e.isJsonPrimitive() || !e.getAsJsonPrimitive().isNumber()) {
            throw new HfFormatException(file + ": " + key + "." + field + " must be a number for rope_type "
                    + (o.has("rope_type") ? o.get("rope_type") : o.get("type")) + ", found " + e);
        }
        return e.getAsDouble();
    }
}
