package org.djlmegatron.cli;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.BufferedReader;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A GPT-2-format byte-level BPE made at test time (no GPT-2 vocabulary ships with the fixtures):
 * merges learned on the first documents of a corpus, written as {@code vocab.json} +
 * {@code merges.txt}, and the same model as a Hugging Face {@code tokenizer.json} (BPE model,
 * ByteLevel pre-tokenizer with GPT-2's pattern, ByteLevel decoder) for the tokenizers library.
 */
final class SmallGpt2Vocab {

    /** GPT-2's published pre-tokenization pattern, used here only to collect training words. */
    private static final Pattern WORDS = Pattern.compile(
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
            Pattern.UNICODE_CHARACTER_CLASS);

    final Path vocabFile;
    final Path mergeFile;
    final Path tokenizerJson;

    private SmallGpt2Vocab(Path vocabFile, Path mergeFile, Path tokenizerJson) {
        this.vocabFile = vocabFile;
        this.mergeFile = mergeFile;
        this.tokenizerJson = tokenizerJson;
    }

    /** Learns {@code merges} merges on the first {@code documents} lines of {@code corpus} and writes the files into {@code dir}. */
    static SmallGpt2Vocab train(Path corpus, int documents, int merges, Path dir) throws IOException {
        char[] byteChar = bytesToUnicode();
        Map<String, Long> wordCounts = new HashMap<>();
        try (BufferedReader in = Files.newBufferedReader(corpus, StandardCharsets.UTF_8)) {
            String line;
            for (int n = 0; n < documents && (line = in.readLine()) != null; n++) {
                String text = JsonParser.parseString(line).getAsJsonObject().get("text").getAsString();
                Matcher m = WORDS.matcher(text);
                while (m.find()) {
                    StringBuilder w = new StringBuilder();
                    for (byte b : m.group().getBytes(StandardCharsets.UTF_8)) {
                        w.append(byteChar[b & 0xFF]);
                    }
                    wordCounts.merge(w.toString(), 1L, Long::sum);
                }
            }
        }
        List<List<String>> words = new ArrayList<>();
        List<Long> counts = new ArrayList<>();
        wordCounts.forEach((w, c) -> {
            List<String> symbols = new ArrayList<>();
            w.chars().forEach(ch -> symbols.add(String.valueOf((char) ch)));
            words.add(symbols);
            counts.add(c);
        });
        Map<String, Integer> vocab = new LinkedHashMap<>();
        for (char c : byteChar) {
            vocab.put(String.valueOf(c), vocab.size());
        }
        List<String> mergeList = new ArrayList<>();
        Map<String, Long> pairs = new HashMap<>();
        for (int i = 0; i < words.size(); i++) {
            countPairs(words.get(i), counts.get(i), pairs);
        }
        for (int k = 0; k < merges; k++) {
            String best = bestPair(pairs);
            if (best == null) {
                break;
            }
            mergeList.add(best);
            String[] ab = best.split(" ");
            vocab.putIfAbsent(ab[0] + ab[1], vocab.size());
            for (int i = 0; i < words.size(); i++) { // only the words holding the pair change their counts
                List<String> w = words.get(i);
                if (holds(w, ab[0], ab[1])) {
                    countPairs(w, -counts.get(i), pairs);
                    mergeInto(w, ab[0], ab[1]);
                    countPairs(w, counts.get(i), pairs);
                }
            }
        }
        vocab.put("<|endoftext|>", vocab.size());
        return write(dir, vocab, mergeList);
    }

    private static void countPairs(List<String> w, long count, Map<String, Long> pairs) {
        for (int j = 0; j + 1 < w.size(); j++) {
            pairs.merge(w.get(j) + " " + w.get(j + 1), count, (x, y) -> x + y == 0 ? null : x + y);
        }
    }

    private static boolean holds(List<String> w, String a, String b) {
        for (int j = 0; j + 1 < w.size(); j++) {
            if (w.get(j).equals(a) && w.get(j + 1).equals(b)) {
                return true;
            }
        }
        return false;
    }

    /** The most frequent adjacent pair ("a b"), ties to the smallest string; null when none repeats. */
    private static String bestPair(Map<String, Long> pairs) {
        String best = null;
        long bestCount = 1;
        for (Map.Entry<String, Long> e : pairs.entrySet()) {
            if (e.getValue() > bestCount || (e.getValue() == bestCount && best != null && e.getKey().compareTo(best) < 0)) {
                best = e.getKey();
                bestCount = e.getValue();
            }
        }
        return best;
    }

    private static void mergeInto(List<String> w, String a, String b) {
        for (int j = 0; j + 1 < w.size(); j++) {
            if (w.get(j).equals(a) && w.get(j + 1).equals(b)) {
                w.set(j, a + b);
                w.remove(j + 1);
            }
        }
    }

    private static SmallGpt2Vocab write(Path dir, Map<String, Integer> vocab, List<String> merges) throws IOException {
        Files.createDirectories(dir);
        JsonObject v = new JsonObject();
        vocab.forEach(v::addProperty);
        Path vocabFile = Files.writeString(dir.resolve("vocab.json"), v.toString());
        Path mergeFile = Files.writeString(dir.resolve("merges.txt"), "#version: 0.2\n" + String.join("\n", merges) + "\n");

        JsonObject model = new JsonObject();
        model.addProperty("type", "BPE");
        model.add("dropout", null);
        model.add("unk_token", null);
        model.addProperty("continuing_subword_prefix", "");
        model.addProperty("end_of_word_suffix", "");
        model.addProperty("fuse_unk", false);
        model.addProperty("byte_fallback", false);
        model.add("vocab", v);
        JsonArray m = new JsonArray();
        merges.forEach(m::add);
        model.add("merges", m);
        JsonObject t = new JsonObject();
        t.addProperty("version", "1.0");
        t.add("truncation", null);
        t.add("padding", null);
        t.add("added_tokens", new JsonArray()); // <|endoftext|> is a plain vocabulary entry, as in Megatron's tokenizer
        t.add("normalizer", null);
        t.add("pre_tokenizer", byteLevel(false));
        t.add("post_processor", null);
        t.add("decoder", byteLevel(true));
        t.add("model", model);
        Path hf = Files.createDirectories(dir.resolve("hf"));
        Path tokenizerJson = Files.writeString(hf.resolve("tokenizer.json"),
                new com.google.gson.GsonBuilder().serializeNulls().create().toJson(t));
        Files.writeString(hf.resolve("tokenizer_config.json"), "{\"eos_token\": \"<|endoftext|>\"}");
        return new SmallGpt2Vocab(vocabFile, mergeFile, tokenizerJson);
    }

    private static JsonObject byteLevel(boolean prefixSpace) {
        JsonObject o = new JsonObject();
        o.addProperty("type", "ByteLevel");
        o.addProperty("add_prefix_space", prefixSpace);
        o.addProperty("trim_offsets", true);
        o.addProperty("use_regex", true);
        return o;
    }

    /** GPT-2's byte to printable character map (its encoder.py). */
    private static char[] bytesToUnicode() {
        char[] out = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++) {
            boolean keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
            out[b] = keep ? (char) b : (char) (256 + n++);
        }
        return out;
    }
}
