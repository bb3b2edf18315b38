package org.djlmegatron.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code preprocess-data} with the Hugging Face tokenizer, failing at a random line while the
 * workers are still encoding later batches: the command must fail with its one-line error and
 * leave nothing behind, every time. Before the tokenizer could be closed under running workers,
 * this crashed the JVM (SIGSEGV in the tokenizers library) in most runs.
 */
class PreprocessStressTest {

    private static final int RUNS_PER_WORKER_COUNT = 6;

    @TempDir
    Path tmp;

    @Test
    void failingAtRandomLinesNeverCrashesAndLeavesNothing() throws IOException {
        List<String> lines = Files.readAllLines(CliCapture.fixture("megatron_preprocess/corpus.jsonl"),
                StandardCharsets.UTF_8).subList(0, 500);
        Random random = new Random(11);
        List<Path> outputs = new ArrayList<>();
        for (int workers : new int[] {1, 2, 4}) {
            for (int run = 0; run < RUNS_PER_WORKER_COUNT; run++) {
                int bad = random.nextInt(lines.size() / 2);
                List<String> corpus = new ArrayList<>(lines);
                String line = corpus.get(bad);
                corpus.set(bad, line.substring(0, line.length() / 2)); // cut short: an unterminated string
                Path in = Files.write(tmp.resolve("in-" + workers + "-" + run + ".jsonl"), corpus, StandardCharsets.UTF_8);
                Path created = tmp.resolve("out-" + workers + "-" + run);
                String[] err = new String[1];
                int[] rc = new int[1];
                err[0] = CliCapture.stderrOf(() -> rc[0] = Main.run("preprocess-data", "--input", in.toString(),
                        "--output-prefix", created.resolve("a/b/p").toString(), "--tokenizer-type",
                        "HuggingFaceTokenizer", "--tokenizer-model", CliCapture.fixture("tokenizers/llama2").toString(),
                        "--append-eod", "--workers", Integer.toString(workers)));
                assertThat(rc[0]).as("workers %d, bad line %d", workers, bad + 1).isEqualTo(1);
                String[] errLines = err[0].strip().split("\n");
                assertThat(errLines[errLines.length - 1]).startsWith("djl-megatron preprocess-data: error: " + in + ":" + (bad + 1) + ": ")
                        .contains("unterminated string");
                outputs.add(created);
            }
        }
        assertThat(outputs).as("created folders are removed on failure").allSatisfy(p -> assertThat(p).doesNotExist());
        try (Stream<Path> left = Files.list(Path.of("."))) {
            assertThat(left.map(p -> p.getFileName().toString())).noneMatch(n -> n.startsWith("hs_err_pid"));
        }
    }

    @Test
    void refusesToOverwriteAnExistingDatasetWithoutOverwrite() throws IOException {
        Path in = Files.writeString(tmp.resolve("ok.jsonl"), "{\"text\": \"abc\"}\n");
        String prefix = tmp.resolve("p").toString();
        String[] args = {"preprocess-data", "--input", in.toString(), "--output-prefix", prefix,
            "--tokenizer-type", "ByteLevelTokenizer"};
        assertThat(Main.run(args)).isZero();
        byte[] before = Files.readAllBytes(tmp.resolve("p_text_document.bin"));
        Files.writeString(in, "{\"text\": \"something else\"}\n");
        int[] rc = new int[1];
        String err = CliCapture.stderrOf(() -> rc[0] = Main.run(args));
        assertThat(rc[0]).isEqualTo(1);
        assertThat(err.strip()).isEqualTo("djl-megatron preprocess-data: error: " + tmp.resolve("p_text_document.bin")
                + ": exists; pass --overwrite to replace it");
        assertThat(Files.readAllBytes(tmp.resolve("p_text_document.bin"))).isEqualTo(before);

        String[] again = Stream.concat(Stream.of(args), Stream.of("--overwrite")).toArray(String[]::new);
        assertThat(Main.run(again)).isZero();
        assertThat(Files.readAllBytes(tmp.resolve("p_text_document.bin"))).isNotEqualTo(before);
    }
}
