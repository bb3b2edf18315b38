package org.djlmegatron.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Bad option values are refused before any work, in one line naming the flag, the expectation and the value. */
class OptionValidationTest {

    private static final String[] SMALL = {"pretrain-gpt", "--mock-data", "--num-layers", "1", "--hidden-size", "32",
        "--num-attention-heads", "2", "--seq-length", "16", "--vocab-size", "64", "--micro-batch-size", "2",
        "--train-iters", "2", "--lr", "1e-3"};

    @TempDir
    Path tmp;

    record Result(int rc, String err) {}

    private static Result run(String... args) {
        int[] rc = new int[1];
        String err = CliCapture.stderrOf(() -> CliCapture.stdoutOf(() -> rc[0] = Main.run(args)));
        return new Result(rc[0], err.strip());
    }

    /** The small run with {@code more} (flag, value pairs or flags) replacing or adding options. */
    private static String[] small(String... more) {
        java.util.List<String> args = new java.util.ArrayList<>(java.util.List.of(SMALL));
        for (int i = 0; i < more.length; i++) {
            int at = args.indexOf(more[i]);
            boolean hasValue = i + 1 < more.length && !more[i + 1].startsWith("--");
            if (at >= 0 && hasValue) {
                args.set(at + 1, more[++i]);
            } else {
                args.add(more[i]);
                if (hasValue) {
                    args.add(more[++i]);
                }
            }
        }
        return args.toArray(String[]::new);
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
        "--micro-batch-size|0|--micro-batch-size: expected a positive integer, found 0",
        "--save-interval|0|--save-interval: expected a positive integer, found 0",
        "--train-iters|0|--train-iters: expected a positive integer, found 0",
        "--lr|NaN|--lr: expected a finite number >= 0, found NaN",
        "--lr|Infinity|--lr: expected a finite number >= 0, found Infinity",
        "--adam-beta2|1|--adam-beta2: expected a number in [0, 1), found 1.0",
        "--hidden-size|33|--hidden-size: expected a multiple of --num-attention-heads 2 (or give --kv-channels), found 33",
        "--num-attention-heads|5|--hidden-size: expected a multiple of --num-attention-heads 5 (or give --kv-channels), found 32",
        "--tensor-model-parallel-size|0|--tensor-model-parallel-size: expected a positive integer, found 0",
        "--log-interval|0|--log-interval: expected a positive integer, found 0",
    })
    void pretrainRefusesBadValuesInOneLine(String flag, String value, String message) {
        Result r = run(small(flag, value, "--save", tmp.resolve("ckpt").toString()));
        assertThat(r.rc()).isEqualTo(1);
        assertThat(r.err()).isEqualTo("djl-megatron pretrain-gpt: error: " + message);
        assertThat(tmp.resolve("ckpt")).doesNotExist();
    }

    @Test
    void mockDataWithDataPathIsRefused() {
        Result r = run(small("--data-path", tmp.resolve("corpus").toString()));
        assertThat(r.rc()).isEqualTo(1);
        assertThat(r.err()).isEqualTo("djl-megatron pretrain-gpt: error: --mock-data: expected not together with "
                + "--data-path, found both");
    }

    @Test
    void tokenIdsAboveTheVocabularyNameTheDatasetAndTheId() throws IOException {
        Path in = Files.writeString(tmp.resolve("c.jsonl"), "{\"text\": \"" + "caf\u00e9 ".repeat(20) + "\"}\n"
                + "{\"text\": \"more text here to make samples\"}\n".repeat(40));
        assertThat(Main.run("preprocess-data", "--input", in.toString(), "--output-prefix", tmp.resolve("c").toString(),
                "--tokenizer-type", "ByteLevelTokenizer", "--append-eod")).isZero();
        String prefix = tmp.resolve("c_text_document").toString();
        Result r = run("pretrain-gpt", "--data-path", prefix, "--split", "100,0,0", "--num-layers", "1",
                "--hidden-size", "32", "--num-attention-heads", "2", "--seq-length", "16", "--vocab-size", "128",
                "--micro-batch-size", "2", "--train-iters", "2", "--lr", "1e-3");
        assertThat(r.rc()).isEqualTo(1);
        assertThat(r.err()).doesNotContain("\n").startsWith("djl-megatron pretrain-gpt: error: --data-path " + prefix
                + ": token id ").contains("is outside the vocabulary [0, 128)").doesNotContain("index out of range");
        assertThat(r.err()).containsPattern("token id (195|169|256) ");
    }

    @Test
    void parseErrorsAreOneLineAndAHint() {
        Result r = run("pretrain-gpt", "--micro-batch-size", "four", "--train-iters", "1", "--lr", "1");
        assertThat(r.rc()).isEqualTo(2);
        assertThat(r.err().split("\n")).hasSize(2);
        assertThat(r.err()).startsWith("djl-megatron pretrain-gpt: error: Invalid value for option '--micro-batch-size'")
                .endsWith("\nsee: djl-megatron help pretrain-gpt");
        Result unknown = run("pretrain-gpt", "--no-such-flag");
        assertThat(unknown.err().split("\n")).hasSize(2);
        assertThat(unknown.err()).endsWith("see: djl-megatron help pretrain-gpt");
    }

    @Test
    void otherCommandsRefuseZeroSizes() {
        assertThat(run("logits", "--checkpoint", "x", "--input-ids", "y", "--output", "z", "--tp", "0").err())
                .isEqualTo("djl-megatron logits: error: --tp: expected a positive integer, found 0");
        assertThat(run("convert", "--input", "x", "--output", tmp.resolve("o").toString(), "--to", "djl", "--pp", "0").err())
                .isEqualTo("djl-megatron convert: error: --pp: expected a positive integer, found 0");
        assertThat(run("bench-convert", "--size-gb", "NaN").err())
                .isEqualTo("djl-megatron bench-convert: error: --size-gb: expected a finite number > 0, found NaN");
    }
}
