package org.djlmegatron.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code evaluate --data-path} gives the validation loss that {@code pretrain-gpt} printed for the
 * checkpoint it saved, on Megatron data made by {@code preprocess-data}, at DP=2 (as trained) and TP=2.
 */
class EvaluateDataPathTest {

    @TempDir
    Path tmp;

    @Test
    void sameNumberAsPretrainGptsEvaluation() throws Exception {
        Path corpus = CliCapture.fixture("megatron_preprocess/corpus.jsonl");
        Path jsonl = Files.write(tmp.resolve("small.jsonl"), Files.readAllLines(corpus).subList(0, 200));
        Path prefix = tmp.resolve("small");
        assertThat(Main.run("preprocess-data", "--input", jsonl.toString(), "--json-keys", "text", "--output-prefix",
                prefix.toString(), "--tokenizer-type", "ByteLevelTokenizer", "--append-eod", "--workers", "2")).isZero();
        List<String> data = List.of("--data-path", prefix + "_text_document", "--split", "90,10,0", "--seq-length", "64",
                "--micro-batch-size", "2", "--global-batch-size", "4", "--seed", "3", "--train-iters", "4",
                "--eval-interval", "2", "--eval-iters", "3", "--data-cache-path", tmp.resolve("cache").toString());
        Path ckpt = tmp.resolve("ckpt");
        List<String> train = new ArrayList<>(List.of("pretrain-gpt", "--tokenizer-type", "ByteLevelTokenizer",
                "--num-layers", "1", "--hidden-size", "32", "--num-attention-heads", "4", "--nproc-per-node", "2",
                "--lr", "3e-3", "--save", ckpt.toString()));
        train.addAll(data);
        String log = CliCapture.stdoutOf(() -> assertThat(Main.run(train.toArray(String[]::new))).isZero());
        Matcher m = Pattern.compile("validation loss at iteration 4 \\| (lm loss value: \\S+ \\| lm loss PPL: \\S+ \\|)")
                .matcher(log);
        assertThat(m.find()).as(log).isTrue();
        for (String[] layout : new String[][] {{"1", "2"}, {"2", "1"}}) {
            List<String> eval = new ArrayList<>(List.of("evaluate", "--checkpoint", ckpt.toString(), "--tp", layout[0],
                    "--dp", layout[1]));
            eval.addAll(data);
            String out = CliCapture.stdoutOf(() -> assertThat(Main.run(eval.toArray(String[]::new))).isZero());
            assertThat(out).as("tp %s dp %s", layout[0], layout[1]).contains(m.group(1));
        }
    }
}
