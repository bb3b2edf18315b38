package org.djlmegatron.data;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Example;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.lifecycle.AfterContainer;
import net.jqwik.api.lifecycle.BeforeContainer;
import org.djlmegatron.fuzz.Mutations;
import org.djlmegatron.fuzz.Robustness;

/**
 * Robustness of the data readers: a damaged {@code .idx} beside its {@code .bin}, and any bytes
 * as a JSON line, give a value or an {@link InvalidDataException}; never another exception or a hang.
 */
class DataReadersFuzzTest {

    private static final String LINE = "{\"text\": \"caf\\u00e9 \\\"quoted\\\" \\ud83d\\ude00\", \"id\": [1, 2.5e3, true, null],"
            + " \"nested\": {\"a\": [\"x\", \"y\"]}}";
    private static Path dir;
    private static Path prefix;
    private static byte[] idx;

    @BeforeContainer
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

    @AfterContainer
    static void removeDataset() throws IOException {
        try (var files = Files.list(dir)) {
            for (Path p : files.toList()) {
                Files.delete(p);
            }
        }
        Files.delete(dir);
    }

    @Property(tries = 300)
    void damagedIndexFilesAreReadOrRefused(@ForAll("indexes") byte[] bytes) {
        try {
            Files.write(IndexedDataset.idxPath(prefix), bytes);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        Robustness.valueOrTyped(bytes.length + "-byte .idx", () -> {
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

    /** Found by the property: a document count near 2^62 overflowed the offsets back into the file. */
    @Example
    void anOverflowingDocumentCountIsRefused() {
        byte[] b = idx.clone();
        b[33] = 0x40; // the top byte of the document-index count
        damagedIndexFilesAreReadOrRefused(b);
    }

    @Property(tries = 1000)
    void anyBytesAreAJsonLineOrRefused(@ForAll("lines") byte[] line) {
        JsonLineParser parser = new JsonLineParser(List.of("text", "nested"));
        Robustness.valueOrTyped(new String(line, StandardCharsets.UTF_8), () -> parser.parse(line, 0, line.length),
                InvalidDataException.class);
    }

    @Provide
    Arbitrary<byte[]> indexes() {
        return Mutations.of(idx, 0, idx.length, 128);
    }

    @Provide
    Arbitrary<byte[]> lines() {
        byte[] good = LINE.getBytes(StandardCharsets.UTF_8);
        Arbitrary<byte[]> text = Arbitraries.strings().withChars("{}[]\":,\\ u0123456789abcdeftrunl.-+E\t")
                .ofMaxLength(64).map(s -> s.getBytes(StandardCharsets.UTF_8));
        return Arbitraries.oneOf(Mutations.of(good, 0, good.length, 128), text);
    }
}
