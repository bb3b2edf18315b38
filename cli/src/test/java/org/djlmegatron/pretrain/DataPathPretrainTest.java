package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.cli.Main;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** pretrain-gpt on Megatron .bin/.idx data made by preprocess-data: learns, and resumes on the right samples. */
class DataPathPretrainTest {

    @TempDir
    Path tmp;

    private Path prefix;

    @BeforeEach
    void preprocess() throws Exception {
        Path corpus = PretrainRunner.fixtures().resolve("megatron_preprocess/corpus.jsonl");
        List<String> lines = Files.readAllLines(corpus).subList(0, 300);
        Path jsonl = Files.write(tmp.resolve("small.jsonl"), lines);
        prefix = tmp.resolve("small");
        int rc = Main.run("preprocess-data", "--input", jsonl.toString(), "--json-keys", "text", "--output-prefix",
                prefix.toString(), "--tokenizer-type", "ByteLevelTokenizer", "--append-eod", "--workers", "2");
        assertThat(rc).isZero();
    }

    private String[] args(String... more) {
        List<String> a = new ArrayList<>(List.of("--data-path", prefix + "_text_document", "--split", "95,5,0",
                "--tokenizer-type", "ByteLevelTokenizer", "--num-layers", "2", "--hidden-size", "64",
                "--num-attention-heads", "4", "--seq-length", "64", "--micro-batch-size", "2", "--global-batch-size", "4",
                "--nproc-per-node", "2", "--lr", "3e-3", "--lr-warmup-iters", "5", "--lr-decay-style", "cosine",
                "--lr-decay-iters", "40", "--seed", "3", "--data-cache-path", tmp.resolve("cache").toString()));
        a.addAll(List.of(more));
        return a.toArray(new String[0]);
    }

    @Test
    void learnsFromPreprocessedText() {
        List<StepResult> steps = PretrainRunner.run(args("--train-iters", "40"));
        double first = steps.get(0).loss();
        double last = steps.subList(30, 40).stream().mapToDouble(StepResult::loss).average().orElseThrow();
        assertThat(first).isGreaterThan(5.0); // about log(vocab 257 padded to 384) at the start
        assertThat(last).isLessThan(first - 1.5);
    }

    @Test
    void resumedRunReadsTheSamplesItWouldHaveRead() {
        List<StepResult> straight = PretrainRunner.run(args("--train-iters", "8"));
        Path ckpt = tmp.resolve("ckpt");
        PretrainRunner.run(args("--train-iters", "4", "--save", ckpt.toString()));
        List<StepResult> resumed = PretrainRunner.run(args("--train-iters", "8", "--load", ckpt.toString()));
        assertThat(resumed).hasSize(4);
        for (StepResult r : resumed) {
            assertThat(r.loss()).as("loss at %d", r.iteration()).isEqualTo(straight.get((int) r.iteration() - 1).loss());
        }
    }
}
