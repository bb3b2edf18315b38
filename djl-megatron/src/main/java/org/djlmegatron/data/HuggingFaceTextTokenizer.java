package org.djlmegatron.data;

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import ai.djl.huggingface.tokenizers.jni.TokenizersLibrary;

import com.google.gson.JsonElement;
import com.google.gson.JsonParser;
import com.google.gson.stream.JsonReader;
import com.google.gson.stream.JsonToken;

import java.io.IOException;
import java.io.InputStream;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.ReadWriteLock;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * A Hugging Face {@code tokenizer.json} run by DJL's bundled Rust tokenizers library, giving
 * exactly {@code tokenizer(text).input_ids} of a transformers fast tokenizer: the tokenizer's own
 * normalizer, pre-tokenizer, model and post-processor (which adds BOS for Llama), no truncation,
 * no padding.
 *
 * <p>Encoding calls the native library directly and fetches only the ids. DJL's
 * {@code HuggingFaceTokenizer.encode} also materialises token strings, offsets and masks for
 * every token (about twice the time) and may rewrite the text in Java from
 * {@code tokenizer_config.json} settings (lower-casing, accent stripping, a prefix space) that a
 * fast tokenizer already encodes in {@code tokenizer.json}.
 *
 * <p>Megatron's {@code vocab_size} is {@code len(tokenizer)}: the distinct tokens of the model
 * vocabulary and the added tokens. Its {@code eod} is the id of {@code eos_token}, read from
 * {@code tokenizer_config.json} (or {@code special_tokens_map.json}) beside the
 * {@code tokenizer.json}, as {@code AutoTokenizer} does.
 *
 * <p>The native tokenizer cannot be freed under a thread that is encoding with it (freeing it
 * then crashes the JVM): every native call holds the read side of a lock, {@link #close()} takes
 * the write side, so it waits for calls in flight (up to {@link #CLOSE_TIMEOUT_SECONDS}), and
 * calls after it fail with an {@link IllegalStateException}. If calls are still running at the
 * timeout, the native tokenizer is left allocated (a leak, not a crash) and close says so.
 */
public final class HuggingFaceTextTokenizer implements TextTokenizer {

    /** The {@code --tokenizer-type} value. */
    public static final String TYPE = "HuggingFaceTokenizer";

    /** How long {@link #close()} waits for encodes in flight. */
    static final long CLOSE_TIMEOUT_SECONDS = 60;

    private final Path file;
    private final HuggingFaceTokenizer tokenizer;
    private final ReadWriteLock users = new ReentrantReadWriteLock();
    private boolean closed;
    private final long handle;
    private final int vocabSize;
    private final Integer eod;
    private final String eosToken;

    private HuggingFaceTextTokenizer(Path file, HuggingFaceTokenizer tokenizer, int vocabSize, Integer eod,
            String eosToken) {
        this.file = file;
        this.tokenizer = tokenizer;
        this.handle = tokenizer.getHandle();
        this.vocabSize = vocabSize;
        this.eod = eod;
        this.eosToken = eosToken;
    }

    /**
     * Loads {@code model}: a {@code tokenizer.json} or a directory holding one.
     *
     * @throws InvalidDataException if the file is missing or not a tokenizer
     */
    public static HuggingFaceTextTokenizer open(Path model) {
        Path file = Files.isDirectory(model) ? model.resolve("tokenizer.json") : model;
        if (!Files.isRegularFile(file)) {
            throw new InvalidDataException(file + ": no such file (--tokenizer-model must be a tokenizer.json "
                    + "or a directory holding one)");
        }
        // the native load and the vocabulary scan each take ~0.1-0.3 s cold: overlap them
        CompletableFuture<Map<String, Integer>> ids = CompletableFuture.supplyAsync(() -> tokenIds(file));
        Map<String, String> options = Map.of("addSpecialTokens", "true", "truncation", "false", "padding", "false");
        HuggingFaceTokenizer tokenizer;
        try (InputStream in = Files.newInputStream(file)) {
            tokenizer = HuggingFaceTokenizer.newInstance(in, options);
        } catch (IOException | RuntimeException e) {
            throw new InvalidDataException(file + ": the tokenizers library cannot load it: " + e.getMessage(), e);
        }
        try {
            Map<String, Integer> vocabulary = ids.join();
            String eos = eosToken(file.getParent());
            Integer eod = eos == null ? null : vocabulary.get(eos);
            return new HuggingFaceTextTokenizer(file, tokenizer, vocabulary.size(), eod, eos);
        } catch (RuntimeException e) {
            tokenizer.close();
            throw e instanceof CompletionException && e.getCause() instanceof RuntimeException r ? r : e;
        }
    }

    @Override
    public int[] encode(String text) {
        TokenizersLibrary lib = TokenizersLibrary.LIB;
        long[] ids;
        users.readLock().lock();
        try {
            checkOpen();
            long encoding = lib.encode(handle, text, true);
            try {
                ids = lib.getTokenIds(encoding);
            } finally {
                lib.deleteEncoding(encoding);
            }
        } finally {
            users.readLock().unlock();
        }
        int[] out = new int[ids.length];
        for (int i = 0; i < ids.length; i++) {
            out[i] = (int) ids[i];
        }
        return out;
    }

    @Override
    public String decode(long[] ids) {
        users.readLock().lock();
        try {
            checkOpen();
            return tokenizer.decode(ids, false);
        } finally {
            users.readLock().unlock();
        }
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException(describe() + " is closed");
        }
    }

    @Override
    public int vocabSize() {
        return vocabSize;
    }

    @Override
    public int eod() {
        if (eod == null) {
            throw new InvalidDataException(file + ": no end-of-document token: "
                    + (eosToken == null
                            ? "no eos_token in tokenizer_config.json or special_tokens_map.json beside it"
                            : "eos_token \"" + eosToken + "\" is not in the vocabulary"));
        }
        return eod;
    }

    @Override
    public String describe() {
        return TYPE + "(" + file + ")";
    }

    @Override
    public void close() {
        boolean locked;
        try {
            locked = users.writeLock().tryLock(CLOSE_TIMEOUT_SECONDS, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            locked = false;
        }
        if (!locked) {
            // freeing the native tokenizer under a running encode would crash the JVM: leak it instead
            throw new IllegalStateException(describe() + ": still in use after " + CLOSE_TIMEOUT_SECONDS
                    + " s; left open");
        }
        try {
            if (!closed) {
                closed = true;
                tokenizer.close();
            }
        } finally {
            users.writeLock().unlock();
        }
    }

    /**
     * Token string to id over the model vocabulary and the added tokens (which win, as in HF),
     * streamed so the merges and the rest are skipped, not materialised.
     */
    private static Map<String, Integer> tokenIds(Path file) {
        Map<String, Integer> ids = new HashMap<>();
        boolean sawVocab = false;
        try (JsonReader in = new JsonReader(Files.newBufferedReader(file, StandardCharsets.UTF_8))) {
            in.beginObject();
            while (in.hasNext()) {
                String name = in.nextName();
                if (name.equals("model") && in.peek() == JsonToken.BEGIN_OBJECT) {
                    in.beginObject();
                    while (in.hasNext()) {
                        if (in.nextName().equals("vocab")) {
                            readVocab(in, ids);
                            sawVocab = true;
                        } else {
                            in.skipValue();
                        }
                    }
                    in.endObject();
                } else if (name.equals("added_tokens") && in.peek() == JsonToken.BEGIN_ARRAY) {
                    in.beginArray();
                    while (in.hasNext()) {
                        readAddedToken(in, ids);
                    }
                    in.endArray();
                } else {
                    in.skipValue();
                }
            }
        } catch (IOException | RuntimeException e) {
            throw new InvalidDataException(file + ": not a readable tokenizer.json: " + e.getMessage(), e);
        }
        if (!sawVocab) {
            throw new InvalidDataException(file + ": no model.vocab; not a tokenizer.json");
        }
        return ids;
    }

    /** BPE, WordPiece, WordLevel: {@code {"token": id}}; Unigram: {@code [["piece", score], ...]}, id = position. */
    private static void readVocab(JsonReader in, Map<String, Integer> ids) throws IOException {
        if (in.peek() == JsonToken.BEGIN_OBJECT) {
            in.beginObject();
            while (in.hasNext()) {
                ids.put(in.nextName(), in.nextInt());
            }
            in.endObject();
        } else {
            in.beginArray();
            for (int id = 0; in.hasNext(); id++) {
                in.beginArray();
                ids.put(in.nextString(), id);
                while (in.hasNext()) {
                    in.skipValue();
                }
                in.endArray();
            }
            in.endArray();
        }
    }

    private static void readAddedToken(JsonReader in, Map<String, Integer> ids) throws IOException {
        String content = null;
        Integer id = null;
        in.beginObject();
        while (in.hasNext()) {
            switch (in.nextName()) {
                case "content" -> content = in.nextString();
                case "id" -> id = in.nextInt();
                default -> in.skipValue();
            }
        }
        in.endObject();
        if (content != null && id != null) {
            ids.put(content, id);
        }
    }

    /** {@code eos_token} from the configs {@code AutoTokenizer} reads, or null. */
    private static String eosToken(Path dir) {
        for (String name : new String[] {"tokenizer_config.json", "special_tokens_map.json"}) {
            Path p = dir == null ? Path.of(name) : dir.resolve(name);
            if (!Files.isRegularFile(p)) {
                continue;
            }
            try (Reader in = Files.newBufferedReader(p, StandardCharsets.UTF_8)) {
                JsonElement eos = JsonParser.parseReader(in).getAsJsonObject().get("eos_token");
                if (eos != null && eos.isJsonPrimitive()) {
                    return eos.getAsString();
                }
                if (eos != null && eos.isJsonObject() && eos.getAsJsonObject().has("content")) {
                    return eos.getAsJsonObject().get("content").getAsString();
                }
            } catch (IOException | RuntimeException e) {
                throw new InvalidDataException(p + ": not readable JSON: " + e.getMessage(), e);
            }
        }
        return null;
    }
}
