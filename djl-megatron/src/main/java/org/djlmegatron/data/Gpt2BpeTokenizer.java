package org.djlmegatron.data;

import com.google.gson.stream.JsonReader;
import com.google.gson.stream.JsonToken;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Megatron's {@code GPT2BPETokenizer}: OpenAI GPT-2's byte-level BPE from a {@code vocab.json}
 * (token to id) and a {@code merges.txt} (one merge per line, rank = line order). Text is split
 * by GPT-2's pre-tokenization pattern, each piece's UTF-8 bytes mapped to printable characters
 * (GPT-2's {@code bytes_to_unicode}), and merged pair by pair, lowest rank first, every
 * occurrence of the chosen pair left to right. No special tokens are added or recognised in the
 * text; {@code --append-eod} appends {@code <|endoftext|>}. Vocabulary size is the number of
 * entries in {@code vocab.json}, as {@code len(encoder)} in Megatron.
 */
public final class Gpt2BpeTokenizer implements TextTokenizer {

    /** The {@code --tokenizer-type} value. */
    public static final String TYPE = "GPT2BPETokenizer";

    /** The end-of-document token. */
    public static final String EOD_TOKEN = "<|endoftext|>";

    /**
     * GPT-2's pre-tokenization: contractions, letters, digits, other symbols (each optionally
     * after one space), whitespace not followed by a non-space, other whitespace. {@code \s} in
     * Unicode mode, as the Python {@code regex} module and Oniguruma read it.
     */
    static final Pattern PRE_TOKENIZE = Pattern.compile(
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
            Pattern.UNICODE_CHARACTER_CLASS);

    private static final char[] BYTE_TO_CHAR = byteToUnicode();
    private static final int[] CHAR_TO_BYTE = charToByteTable();
    private static final int CACHE_LIMIT = 200_000;

    private final Path vocabFile;
    private final Map<String, Integer> encoder;
    private final String[] decoder;
    private final Map<String, Integer> ranks;
    private final Map<String, int[]> cache = new ConcurrentHashMap<>();

    private Gpt2BpeTokenizer(Path vocabFile, Map<String, Integer> encoder, Map<String, Integer> ranks) {
        this.vocabFile = vocabFile;
        this.encoder = encoder;
        this.ranks = ranks;
        int max = encoder.values().stream().mapToInt(Integer::intValue).max().orElse(-1);
        decoder = new String[max + 1];
        encoder.forEach((token, id) -> decoder[id] = token);
    }

    /**
     * Loads {@code --vocab-file} and {@code --merge-file}.
     *
     * @throws InvalidDataException naming the file (and line) when either is missing or malformed
     */
    public static Gpt2BpeTokenizer open(Path vocabFile, Path mergeFile) {
        if (vocabFile == null || mergeFile == null) {
            throw new IllegalArgumentException("--tokenizer-type " + TYPE + " needs --vocab-file (vocab.json) and "
                    + "--merge-file (merges.txt)");
        }
        return new Gpt2BpeTokenizer(vocabFile, readVocab(vocabFile), readMerges(mergeFile));
    }

    @Override
    public int[] encode(String text) {
        List<int[]> pieces = new ArrayList<>();
        int total = 0;
        Matcher m = PRE_TOKENIZE.matcher(text);
        while (m.find()) {
            int[] ids = cache.get(m.group());
            if (ids == null) {
                ids = bpeIds(m.group());
                if (cache.size() < CACHE_LIMIT) {
                    cache.put(m.group(), ids);
                }
            }
            pieces.add(ids);
            total += ids.length;
        }
        int[] out = new int[total];
        int at = 0;
        for (int[] p : pieces) {
            System.arraycopy(p, 0, out, at, p.length);
            at += p.length;
        }
        return out;
    }

    /** The ids of one pre-token: its bytes as characters, merged. */
    private int[] bpeIds(String piece) {
        byte[] bytes = piece.getBytes(StandardCharsets.UTF_8);
        List<String> word = new ArrayList<>(bytes.length);
        for (byte b : bytes) {
            word.add(String.valueOf(BYTE_TO_CHAR[b & 0xFF]));
        }
        merge(word);
        int[] ids = new int[word.size()];
        for (int i = 0; i < ids.length; i++) {
            Integer id = encoder.get(word.get(i));
            if (id == null) {
                throw new InvalidDataException(vocabFile + ": no token \"" + word.get(i) + "\" (from the text \""
                        + piece + "\"); the vocabulary does not match the merges");
            }
            ids[i] = id;
        }
        return ids;
    }

    /** GPT-2's merge loop: the lowest-ranked adjacent pair, merged everywhere, until none is known. */
    private void merge(List<String> word) {
        while (word.size() > 1) {
            int best = Integer.MAX_VALUE;
            String first = null;
            String second = null;
            for (int i = 0; i + 1 < word.size(); i++) {
                Integer r = ranks.get(word.get(i) + ' ' + word.get(i + 1));
                if (r != null && r < best) {
                    best = r;
                    first = word.get(i);
                    second = word.get(i + 1);
                }
            }
            if (first == null) {
                return;
            }
            List<String> merged = new ArrayList<>(word.size());
            for (int i = 0; i < word.size(); i++) {
                if (i + 1 < word.size() && word.get(i).equals(first) && word.get(i + 1).equals(second)) {
                    merged.add(first + second);
                    i++;
                } else {
                    merged.add(word.get(i));
                }
            }
            word.clear();
            word.addAll(merged);
        }
    }

    /** Tokens back to text: characters to bytes, bytes as UTF-8 (invalid sequences as U+FFFD). */
    @Override
    public String decode(long[] ids) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        for (long id : ids) {
            String token = id >= 0 && id < decoder.length ? decoder[(int) id] : null;
            if (token == null) {
                bytes.writeBytes(("<" + id + ">").getBytes(StandardCharsets.UTF_8));
                continue;
            }
            for (int i = 0; i < token.length(); i++) {
                int b = charToByte(token.charAt(i));
                if (b < 0) { // not a byte-level character (e.g. a hand-added special token): as is
                    bytes.writeBytes(token.getBytes(StandardCharsets.UTF_8));
                    break;
                }
                bytes.write(b);
            }
        }
        return bytes.toString(StandardCharsets.UTF_8);
    }

    @Override
    public int vocabSize() {
        return encoder.size();
    }

    @Override
    public int eod() {
        Integer id = encoder.get(EOD_TOKEN);
        if (id == null) {
            throw new InvalidDataException(vocabFile + ": no end-of-document token " + EOD_TOKEN);
        }
        return id;
    }

    @Override
    public String describe() {
        return TYPE + "(" + vocabFile + ")";
    }

    @Override
    public void close() {}

    /**
     * GPT-2's {@code bytes_to_unicode}: printable Latin-1 bytes ({@code !..~}, {@code ¡..¬},
     * {@code ®..ÿ}) stand for themselves, the other 68 bytes take U+0100 onwards in byte order.
     */
    static char[] byteToUnicode() {
        char[] map = new char[256];
        int next = 0;
        for (int b = 0; b < 256; b++) {
            boolean printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char) b : (char) (256 + next++);
        }
        return map;
    }

    private static int charToByte(char c) {
        return c < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[c] : -1;
    }

    private static int[] charToByteTable() {
        int[] table = new int[512];
        java.util.Arrays.fill(table, -1);
        for (int b = 0; b < 256; b++) {
            table[BYTE_TO_CHAR[b]] = b;
        }
        return table;
    }

    private static Map<String, Integer> readVocab(Path file) {
        Map<String, Integer> vocab = new HashMap<>();
        try (JsonReader in = new JsonReader(Files.newBufferedReader(file, StandardCharsets.UTF_8))) {
            if (in.peek() != JsonToken.BEGIN_OBJECT) {
                throw new InvalidDataException(file + ": expected a JSON object of token to id, found " + in.peek());
            }
            in.beginObject();
            while (in.hasNext()) {
                String token = in.nextName();
                int id = in.nextInt();
                if (id < 0) {
                    throw new InvalidDataException(file + ": token \"" + token + "\" has negative id " + id);
                }
                vocab.put(token, id);
            }
            in.endObject();
        } catch (IOException | IllegalStateException | NumberFormatException e) {
            throw new InvalidDataException(file + ": not a vocab.json (token to id): " + e.getMessage(), e);
        }
        return vocab;
    }

    /** Merge ranks by {@code "first second"}; a leading {@code #version} line is skipped, as GPT-2's files have one. */
    private static Map<String, Integer> readMerges(Path file) {
        List<String> lines;
        try {
            lines = Files.readAllLines(file, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new InvalidDataException(file + ": cannot read merges: " + e, e);
        }
        Map<String, Integer> ranks = new HashMap<>();
        int rank = 0;
        for (int i = 0; i < lines.size(); i++) {
            String line = lines.get(i);
            if ((i == 0 && line.startsWith("#version")) || line.isEmpty()) {
                continue;
            }
            String[] parts = line.split(" ");
            if (parts.length != 2 || parts[0].isEmpty() || parts[1].isEmpty()) {
                throw new InvalidDataException(file + ":" + (i + 1) + ": expected two tokens separated by one space, "
                        + "found \"" + line + "\"");
            }
            ranks.put(parts[0] + ' ' + parts[1], rank++); // a repeated merge takes its later rank, as in a Python dict
        }
        return ranks;
    }
}
