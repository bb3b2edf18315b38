package org.djlmegatron.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.djlmegatron.bridge.LogitsRunner;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code evaluate --jsonl}: the token-mean loss of the llama fixture over byte-level documents, at
 * TP=2 and at DP=2, equals the one computed from the {@code logits} runner's full-vocabulary logits
 * (which match transformers' golden logits) window by window; and bad input is refused in one line.
 */
class EvaluateJsonlTest {

    @TempDir
    Path tmp;

    private static final String[] DOCS = {"The quick brown fox jumps over the lazy dog.", "Hello, world!",
        "Megatron-LM trains transformers at scale; djl-megatron does it in Java."};

    @Test
    void jsonlLossEqualsTheLogitsRunnersAtTp2AndDp2() throws Exception {
        Path jsonl = tmp.resolve("docs.jsonl");
        StringBuilder b = new StringBuilder();
        List<Long> stream = new ArrayList<>();
        for (String d : DOCS) {
            b.append("{\"text\": \"").append(d).append("\"}\n");
            for (byte x : d.getBytes(java.nio.charset.StandardCharsets.UTF_8)) {
                stream.add((long) (x & 0xff));
            }
            stream.add(256L); // the byte-level tokenizer's end of document
        }
        Files.writeString(jsonl, b.toString());
        int seq = 16;
        double sum = 0;
        long count = 0;
        Path llama = CliCapture.fixture("hf/llama");
        for (int start = 0; start + 1 < stream.size(); start += seq) {
            long[] w = stream.subList(start, Math.min(stream.size(), start + seq + 1)).stream().mapToLong(Long::longValue)
                    .toArray();
            float[] logits = LogitsRunner.logits(llama, java.util.Arrays.copyOf(w, w.length - 1), 1, 1, false);
            for (int t = 0; t + 1 < w.length; t++) {
                double max = Double.NEGATIVE_INFINITY;
                for (int v = 0; v < 512; v++) {
                    max = Math.max(max, logits[t * 512 + v]);
                }
                double z = 0;
                for (int v = 0; v < 512; v++) {
                    z += Math.exp(logits[t * 512 + v] - max);
                }
                sum += max + Math.log(z) - logits[t * 512 + (int) w[t + 1]];
                count++;
            }
        }
        double expected = sum / count;
        for (String[] layout : new String[][] {{"2", "1"}, {"1", "2"}}) {
            String out = CliCapture.stdoutOf(() -> assertThat(Main.run("evaluate", "--checkpoint", llama.toString(),
                    "--jsonl", jsonl.toString(), "--tokenizer-type", "ByteLevelTokenizer", "--seq-length", "16",
                    "--micro-batch-size", "2", "--tp", layout[0], "--dp", layout[1])).isZero());
            Matcher m = Pattern.compile("lm loss value: (\\S+) \\| lm loss PPL: (\\S+) \\| tokens: (\\d+)").matcher(out);
            assertThat(m.find()).as(out).isTrue();
            assertThat(Double.parseDouble(m.group(1))).as("tp %s dp %s", layout[0], layout[1])
                    .isCloseTo(expected, org.assertj.core.data.Offset.offset(1e-5));
            assertThat(Double.parseDouble(m.group(2))).isCloseTo(Math.exp(expected), org.assertj.core.data.Percentage.withPercentage(1e-3));
            assertThat(Long.parseLong(m.group(3))).isEqualTo(count);
        }
    }

    @Test
    void refusesMissingTokenizerAndBadLinesInOneLine() throws Exception {
        Path llama = CliCapture.fixture("hf/llama");
        Path jsonl = Files.writeString(tmp.resolve("bad.jsonl"), "{\"text\": \"ok\"}\n{\"body\": \"no text\"}\n");
        String err = CliCapture.stderrOf(() -> assertThat(Main.run("evaluate", "--checkpoint", llama.toString(),
                "--jsonl", jsonl.toString())).isEqualTo(1));
        assertThat(err.strip()).doesNotContain("\n").contains("has no tokenizer.json; give --tokenizer-model");
        err = CliCapture.stderrOf(() -> assertThat(Main.run("evaluate", "--checkpoint", llama.toString(), "--jsonl",
                jsonl.toString(), "--tokenizer-type", "ByteLevelTokenizer")).isEqualTo(1));
        assertThat(err.strip()).doesNotContain("\n").contains("bad.jsonl line 2: no string field \"text\"");
        err = CliCapture.stderrOf(() -> assertThat(Main.run("evaluate", "--checkpoint", llama.toString())).isEqualTo(1));
        assertThat(err).contains("give exactly one of --data-path, --mock-data and --jsonl");
    }
}
