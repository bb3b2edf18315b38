package org.djlmegatron.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code preprocess-data}, {@code inspect-data} and {@code bench-data} end to end. */
class DataCommandsTest {

    @TempDir
    Path tmp;

    private static Path fixture(String relative) {
        return Path.of(System.getProperty("djlm.repo.root", ".")).resolve("../shared/fixtures").resolve(relative)
                .toAbsolutePath().normalize();
    }

    @Test
    void preprocessDataReproducesMegatronsFiles() throws IOException {
        Output o = run("preprocess-data", "--input", fixture("megatron_preprocess/corpus.jsonl").toString(),
                "--json-keys", "text", "--output-prefix", tmp.resolve("corpus").toString(),
                "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", fixture("tokenizers/llama2").toString(),
                "--append-eod", "--workers", "4");
        assertThat(o.rc).isZero();
        assertThat(o.out).contains("2,350 documents, 1,472,498 tokens (uint16, vocabulary 32,000");
        Path ref = fixture("megatron_preprocess/corpus_text_document");
        for (String ext : new String[] {".bin", ".idx"}) {
            assertThat(Files.readAllBytes(tmp.resolve("corpus_text_document" + ext)))
                    .isEqualTo(Files.readAllBytes(Path.of(ref + ext)));
        }
    }

    @Test
    void badLineStopsWithOneLineNamingItAndWritesNothing() throws IOException {
        Path in = Files.writeString(tmp.resolve("bad.jsonl"), "{\"text\": \"a\"}\n{\"txt\": \"b\"}\n");
        Path out = tmp.resolve("out");
        Output o = run("preprocess-data", "--input", in.toString(), "--output-prefix", out.resolve("p").toString(),
                "--tokenizer-type", "ByteLevelTokenizer", "--workers", "1");
        assertThat(o.rc).isEqualTo(1);
        assertThat(o.err.strip()).doesNotContain("\n")
                .isEqualTo("djl-megatron preprocess-data: error: " + in + ":2: no key \"text\" (keys found: txt)");
        assertThat(listing(out)).isEmpty();

        Output skipped = run("preprocess-data", "--input", in.toString(), "--output-prefix", out.resolve("p").toString(),
                "--tokenizer-type", "ByteLevelTokenizer", "--skip-bad-lines");
        assertThat(skipped.rc).isZero();
        assertThat(skipped.err).contains("skipped 1 bad lines (of 2):").contains(in + ":2: no key \"text\"");
        assertThat(listing(out)).containsExactlyInAnyOrder("p_text_document.bin", "p_text_document.idx");
    }

    @Test
    void missingTokenizerModelIsOneLine() {
        Output o = run("preprocess-data", "--input", "x.jsonl", "--output-prefix", tmp.resolve("p").toString(),
                "--tokenizer-type", "HuggingFaceTokenizer");
        assertThat(o.rc).isEqualTo(1);
        assertThat(o.err).contains("--tokenizer-type HuggingFaceTokenizer needs --tokenizer-model");
    }

    @Test
    void inspectDataShowsStatisticsSplitsAndDecodedSamples() {
        Output o = run("inspect-data", "--data-path", fixture("megatron_preprocess/corpus_text_document").toString(),
                "--split", "969,30,1", "--seq-length", "128", "--tokenizer-type", "HuggingFaceTokenizer",
                "--tokenizer-model", fixture("tokenizers/llama2").toString(), "--show-samples", "1");
        assertThat(o.rc).isZero();
        assertThat(o.out).contains("uint16 tokens, 2,350 documents, 2,350 sequences, 1,472,498 tokens")
                .contains("ending with EOD (id 2): 2,350")
                .contains("train 11,153 samples of 129 tokens; sequences [0, 2277), 1 epoch")
                .contains("valid ").contains("test ")
                .contains("train sample 0: [");
    }

    @Test
    void benchDataPrintsRatiosAndRandomAccess() throws IOException {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < 300; i++) {
            sb.append("{\"text\": \"document ").append(i).append(" with some words in it\"}\n");
        }
        Path in = Files.writeString(tmp.resolve("c.jsonl"), sb);
        Output o = run("bench-data", "--input", in.toString(), "--tokenizer-type", "ByteLevelTokenizer",
                "--append-eod", "--workers", "1,2", "--repeats", "1", "--seq-length", "16", "--random-samples", "200");
        assertThat(o.rc).isZero();
        assertThat(o.out).contains("raw encode, 1 thread:").contains("raw encode, 2 threads:")
                .contains("preprocess-data, 2 workers:").contains("the raw encode throughput")
                .contains("dataset random access, seq-length 16, 1 thread:").contains("samples/s");
    }

    private static String[] listing(Path dir) throws IOException {
        if (!Files.exists(dir)) {
            return new String[0];
        }
        try (Stream<Path> files = Files.list(dir)) {
            return files.map(p -> p.getFileName().toString()).toArray(String[]::new);
        }
    }

    private record Output(int rc, String out, String err) {}

    private static Output run(String... args) {
        PrintStream oldOut = System.out;
        PrintStream oldErr = System.err;
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
        System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
        int rc;
        try {
            rc = Main.run(args);
        } finally {
            System.setOut(oldOut);
            System.setErr(oldErr);
        }
        return new Output(rc, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }
}
