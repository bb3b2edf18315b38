package org.djlmegatron.bridge.hf;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * The dropout probabilities of a Hugging Face {@code config.json}, in Megatron's two: hidden
 * (GPT-2's {@code resid_pdrop}, which transformers also applies after the embeddings as
 * {@code embd_pdrop}; 0 for the Llama family, which has none) and attention (GPT-2's
 * {@code attn_pdrop}, the Llama family's {@code attention_dropout}, default 0).
 */
public record HfDropout(double hidden, double attention) {

    /** Reads {@code dir/config.json}. */
    public static HfDropout read(Path dir) {
        Path file = dir.resolve("config.json");
        JsonObject json;
        try {
            json = JsonParser.parseString(Files.readString(file)).getAsJsonObject();
        } catch (IOException | RuntimeException e) {
            throw new HfFormatException(file + ": cannot read as a JSON object (" + e.getMessage() + ")", e);
        }
        double hidden = number(json, "resid_pdrop", 0);
        double embedding = number(json, "embd_pdrop", hidden);
        if (embedding != hidden) {
            throw new HfFormatException(file + ": embd_pdrop " + embedding + " differs from resid_pdrop " + hidden
                    + "; one hidden dropout serves both (Megatron's --hidden-dropout)");
        }
        double attention = number(json, "attn_pdrop", number(json, "attention_dropout", 0));
        return new HfDropout(hidden, attention);
    }

    private static double number(JsonObject json, String key, double fallback) {
        JsonElement e = json.get(key);
        return e == null || e.isJsonNull() ? fallback : e.getAsDouble();
    }
}
