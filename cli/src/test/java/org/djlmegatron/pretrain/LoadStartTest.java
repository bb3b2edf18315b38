package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/** Where {@code --load} starts: without a tracker, and Megatron's restart loop on an empty directory. */
class LoadStartTest {

    private static final String[] MODEL = {"--mock-data", "--num-layers", "1", "--hidden-size", "32",
        "--num-attention-heads", "2", "--seq-length", "16", "--vocab-size", "64", "--micro-batch-size", "2",
        "--lr", "3e-3", "--lr-decay-iters", "10", "--seed", "5"};

    @TempDir
    Path tmp;

    private record Run(List<StepResult> steps, String log) {}

    private static Run train(String... more) {
        List<String> a = new ArrayList<>(List.of(MODEL));
        a.addAll(List.of(more));
        PretrainOptions o = new PretrainOptions();
        new CommandLine(o).parseArgs(a.toArray(new String[0]));
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        List<StepResult> steps = new PretrainGpt(o, new PrintStream(buf, true, StandardCharsets.UTF_8)).run();
        return new Run(steps, buf.toString(StandardCharsets.UTF_8));
    }

    @Test
    void withoutTheTrackerTheNewestCompleteIterationResumes() throws Exception {
        Path ckpt = tmp.resolve("ckpt");
        List<StepResult> straight = train("--train-iters", "3").steps();
        train("--train-iters", "2", "--save", ckpt.toString(), "--save-interval", "1");
        // a kill after the rename of iter_0000002 and before the tracker: the tracker names 1 or is gone
        Files.delete(ckpt.resolve("latest_checkpointed_iteration.txt"));
        Files.createDirectories(ckpt.resolve(".staging_iter_0000003"));
        Run resumed = train("--train-iters", "3", "--load", ckpt.toString());
        assertThat(resumed.log()).contains("> resuming from " + ckpt.resolve("iter_0000002") + " (iteration 2,");
        assertThat(resumed.steps()).hasSize(1);
        assertThat(resumed.steps().get(0).loss()).isEqualTo(straight.get(2).loss());
    }

    @Test
    void loadEqualsSaveOnAMissingOrEmptyDirectoryStartsFresh() throws Exception {
        Path missing = tmp.resolve("missing");
        Run first = train("--train-iters", "2", "--load", missing.toString(), "--save", missing.toString());
        assertThat(first.log()).contains("> no checkpoint in " + missing + " (--load = --save): starting from scratch");
        assertThat(first.steps()).hasSize(2);
        assertThat(missing.resolve("iter_0000002")).isDirectory();

        // a restart loop killed during its first save leaves only hidden staging behind
        Path killed = Files.createDirectories(tmp.resolve("killed/.staging_iter_0000002/mp_rank_00"));
        Path root = killed.getParent().getParent();
        Run again = train("--train-iters", "2", "--load", root.toString(), "--save", root.toString());
        assertThat(again.steps()).hasSize(2);
        assertThat(again.steps().get(1).loss()).isEqualTo(first.steps().get(1).loss());

        // elsewhere, a --load that holds nothing is still an error
        Path other = Files.createDirectories(tmp.resolve("empty"));
        assertThatThrownBy(() -> train("--train-iters", "2", "--load", other.toString()))
                .hasMessageContaining("not a recognised checkpoint");
    }
}
