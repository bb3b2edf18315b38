package org.djlmegatron.generation;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import org.djlmegatron.data.HuggingFaceTextTokenizer;
import org.djlmegatron.data.InvalidDataException;
import org.djlmegatron.data.TextTokenizer;

/**
 * Text generation from a checkpoint of any format at a tensor-parallel size: the model stays
 * loaded on its thread ranks, each call decodes one batch with the KV cache. The tokenizer is the
 * checkpoint directory's {@code tokenizer.json} or an explicit one; without it, prompts are ids.
 * The end-of-sequence id is the tokenizer's {@code eos_token}, else the Hugging Face config's
 * {@code eos_token_id}, unless given.
 */
public final class TextGenerator implements AutoCloseable {

    /** Longest wait for one batch. */
    public static final Duration BATCH_TIMEOUT = Duration.ofMinutes(30);

    private final ModelRanks ranks;
    private final TextTokenizer tokenizer;
    private final Long eosId;

    public TextGenerator(ModelRanks ranks, TextTokenizer tokenizer, Long eosId) {
        this.ranks = ranks;
        this.tokenizer = tokenizer;
        this.eosId = eosId;
    }

    /**
     * Loads {@code checkpoint} on {@code tp} ranks.
     *
     * @param modelConfig Megatron arguments as JSON, for Megatron checkpoints without args (or null)
     * @param tokenizerModel a {@code tokenizer.json} or its directory; null: the checkpoint's own, if any
     * @param eosId the end-of-sequence id; null: from the tokenizer or config, if any
     */
    public static TextGenerator open(Path checkpoint, Path modelConfig, int tp, Path tokenizerModel, Long eosId) {
        TextTokenizer tok = null;
        if (tokenizerModel != null) {
            tok = HuggingFaceTextTokenizer.open(tokenizerModel);
        } else if (Files.isRegularFile(checkpoint.resolve("tokenizer.json"))) {
            tok = HuggingFaceTextTokenizer.open(checkpoint);
        }
        return withTokenizer(checkpoint, modelConfig, tp, tok, eosId);
    }

    /**
     * Loads {@code checkpoint} on {@code tp} ranks with the given tokenizer (null: none), which the
     * generator closes.
     */
    public static TextGenerator withTokenizer(Path checkpoint, Path modelConfig, int tp, TextTokenizer tok, Long eosId) {
        try {
            ModelRanks ranks = ModelRanks.load(checkpoint, modelConfig, tp);
            int vocab = ranks.config().vocabSize();
            if (eosId != null && (eosId < 0 || eosId >= vocab)) {
                ranks.close();
                throw new IllegalArgumentException("--eos-id " + eosId + " is outside the vocabulary [0, " + vocab + ")");
            }
            Long eos = eosId != null ? eosId : eosOf(tok, checkpoint);
            // a configured id the model cannot produce (tiny test models keep GPT-2's 50256) stops nothing
            return new TextGenerator(ranks, tok, eos != null && eos >= 0 && eos < vocab ? eos : null);
        } catch (RuntimeException e) {
            if (tok != null) {
                tok.close();
            }
            throw e;
        }
    }

    private static Long eosOf(TextTokenizer tok, Path checkpoint) {
        if (tok != null) {
            try {
                return (long) tok.eod();
            } catch (InvalidDataException e) {
                // no eos_token beside the tokenizer: the config may name one
            }
        }
        Path config = checkpoint.resolve("config.json");
        if (!Files.isRegularFile(config)) {
            return null;
        }
        try {
            JsonObject o = JsonParser.parseString(Files.readString(config, StandardCharsets.UTF_8)).getAsJsonObject();
            JsonElement e = o.get("eos_token_id");
            if (e == null || e.isJsonNull()) {
                return null;
            }
            return e.isJsonArray() ? e.getAsJsonArray().get(0).getAsLong() : e.getAsLong();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + config, e);
        }
    }

    public ModelRanks ranks() {
        return ranks;
    }

    /** The longest sequence, prompt and new tokens ({@code max_position_embeddings}). */
    public int contextLength() {
        return ranks.config().maxPositionEmbeddings();
    }

    public Optional<TextTokenizer> tokenizer() {
        return Optional.ofNullable(tokenizer);
    }

    /** The end-of-sequence id that stops a row, if any. */
    public Optional<Long> eosId() {
        return Optional.ofNullable(eosId);
    }

    /** The ids of {@code text}, with the tokenizer's special tokens (e.g. BOS). */
    public long[] encode(String text) {
        if (tokenizer == null) {
            throw new InvalidRequestException("no tokenizer: the checkpoint directory has no tokenizer.json; "
                    + "give --tokenizer-model or prompts as token ids");
        }
        if (text == null || text.isEmpty()) {
            throw new InvalidRequestException("empty prompt");
        }
        int[] ids = tokenizer.encode(text);
        long[] out = new long[ids.length];
        for (int i = 0; i < ids.length; i++) {
            out[i] = ids[i];
        }
        return out;
    }

    /** The text of {@code ids}, or null without a tokenizer. */
    public String decode(long[] ids) {
        return tokenizer == null ? null : tokenizer.decode(ids);
    }

    /** Generates with the KV cache; {@code listener} hears each new token as it is chosen. */
    public List<Generated> generate(List<Prompt> prompts, boolean logprobs, TokenListener listener) {
        return generate(prompts, logprobs, listener, true);
    }

    /**
     * Generates one batch.
     *
     * @param useCache false recomputes the whole prefix at every step (the benchmark's baseline)
     * @throws InvalidRequestException for an id outside the vocabulary or a prompt the context cannot hold
     */
    public List<Generated> generate(List<Prompt> prompts, boolean logprobs, TokenListener listener, boolean useCache) {
        check(prompts);
        int context = contextLength();
        return ranks.run((ctx, model) -> new DecodeLoop(ctx, model).run(prompts, eosId, context, useCache, logprobs,
                listener), BATCH_TIMEOUT);
    }

    /** Refuses what the model cannot run, before any rank starts. */
    public void check(List<Prompt> prompts) {
        if (prompts.isEmpty()) {
            throw new InvalidRequestException("no prompts");
        }
        int vocab = ranks.config().vocabSize();
        int context = contextLength();
        for (int i = 0; i < prompts.size(); i++) {
            Prompt p = prompts.get(i);
            for (long id : p.ids()) {
                if (id < 0 || id >= vocab) {
                    throw new InvalidRequestException("prompt " + (i + 1) + ": token id " + id
                            + " is outside the vocabulary [0, " + vocab + ")");
                }
            }
            int n = p.ids().length;
            if (n > context || (n == context && p.maxNewTokens() > 0)) {
                throw new InvalidRequestException("prompt " + (i + 1) + " has " + n + " tokens; the context holds "
                        + context + " (max_position_embeddings), prompt and new tokens together");
            }
        }
    }

    @Override
    public void close() {
        ranks.close();
        if (tokenizer != null) {
            tokenizer.close();
        }
    }
}
