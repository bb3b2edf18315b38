package org.djlmegatron.data;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;
import org.djlmegatron.fuzz.Mutations;
import org.djlmegatron.fuzz.Robustness;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Robustness of the data readers: a damaged {@code .idx} beside its {@code .bin}, and any bytes
 * as a JSON line, give a value or an {@link InvalidDataException}; never another exception or a hang.
 * The inputs are seeded random mutations ({@link Mutations}); a failure names the seed and input.
 */
class DataReadersFuzzTest {

    private static final String JSON_CHARS = "{}[]\":,\\ u0123456789abcdeftrunl.-+E\t";
    private static final String LINE = "{\"text\": \"caf\\u00e9 \\\"quoted\\\" \\ud83d\\ude00\", \"id\": [1, 2.5e3, true, null],"
            + " \"nested\": {\"a\": [\"x\", \"y\"]}}";
    private static Path dir;
    private static Path prefix;
    private static byte[] idx;

    @BeforeAll
    static void makeDataset() throws IOException {
        dir = Files.createTempDirectory("data-fuzz");
        prefix = dir.resolve("d");
        try (IndexedDatasetBuilder b = IndexedDatasetBuilder.create(prefix, TokenDType.UINT16)) {
            b.addDocument(new int[] {1, 2, 3});
            b.addDocument(new int[] {4, 5, 6, 7, 8}, new int[] {2, 3});
            b.addDocument(new int[0], new int[0]);
            b.addDocument(new int[] {9});
            b.finish();
        }
        idx = Files.readAllBytes(IndexedDataset.idxPath(prefix));
    }

    @AfterAll
    static void removeDataset() throws IOException {
        try (var files = Files.list(dir)) {
            for (Path p : files.toList()) {
                Files.delete(p);
            }
        }
        Files.delete(dir);
    }

    @Test
    void damagedIndexFilesAreReadOrRefused() {
        for (int i = 0; i < 300; i++) {
            byte[] bytes = Mutations.sample(idx, 0, idx.length, 128, Mutations.random(Mutations.SEED, i));
            checkIndex(Mutations.where(Mutations.SEED, i), bytes);
        }
    }

    /** Found by the property: a document count near 2^62 overflowed the offsets back into the file. */
    @Test
    void anOverflowingDocumentCountIsRefused() {
        byte[] b = idx.clone();
        b[33] = 0x40; // the top byte of the document-index count
        checkIndex("document count near 2^62", b);
    }

    @Test
    void anyBytesAreAJsonLineOrRefused() {
        byte[] good = LINE.getBytes(StandardCharsets.UTF_8);
        JsonLineParser parser = new JsonLineParser(List.of("text", "nested"));
        for (int i = 0; i < 1000; i++) {
            Random rnd = Mutations.random(Mutations.SEED, i);
            byte[] line = rnd.nextBoolean() ? Mutations.sample(good, 0, good.length, 128, rnd) : text(rnd);
            Robustness.valueOrTyped(Mutations.where(Mutations.SEED, i) + ": " + new String(line, StandardCharsets.UTF_8),
                    () -> parser.parse(line, 0, line.length), InvalidDataException.class);
        }
    }

    private static void checkIndex(String where, byte[] bytes) {
        try {
            Files.write(IndexedDataset.idxPath(prefix), bytes);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        Robustness.valueOrTyped(where + ": " + bytes.length + "-byte .idx", () -> {
            try (IndexedDataset d = IndexedDataset.open(prefix)) {
                for (long i = 0; i < Math.min(d.sequenceCount(), 1000); i++) {
                    d.get(i);
                }
                for (long i = 0; i <= Math.min(d.documentCount(), 1000); i++) {
                    d.documentIndex(i);
                }
            }
            return null;
        }, InvalidDataException.class);
    }

    /** Up to 64 characters of JSON's alphabet. */
    private static byte[] text(Random rnd) {
        char[] c = new char[rnd.nextInt(65)];
        for (int i = 0; i < c.length; i++) {
            c[i] = JSON_CHARS.charAt(rnd.nextInt(JSON_CHARS.length()));
        }
        return new String(c).getBytes(StandardCharsets.UTF_8);
    }
}
