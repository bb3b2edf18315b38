package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.djlmegatron.checkpoint.TrainingCheckpoint;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Checkpoint, resume in a new process, and a JVM killed in the middle of a save. */
class ResumeTest {

    @TempDir
    Path tmp;

    private static final String[] MODEL = {"--mock-data", "--num-layers", "2", "--hidden-size", "32",
        "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128", "--micro-batch-size", "2",
        "--global-batch-size", "4", "--lr", "3e-3", "--lr-warmup-iters", "2", "--lr-decay-style", "cosine",
        "--lr-decay-iters", "20", "--nproc-per-node", "2", "--use-distributed-optimizer", "--seed", "11"};

    /** The same, as a command line for a forked JVM. */
    private static String[] cli(String... more) {
        List<String> a = new ArrayList<>(List.of("pretrain-gpt"));
        a.addAll(List.of(args(more)));
        return a.toArray(new String[0]);
    }

    private static String[] args(String... more) {
        List<String> a = new ArrayList<>(List.of(MODEL));
        a.addAll(List.of(more));
        return a.toArray(new String[0]);
    }

    @Test
    void tenPlusTenInANewProcessEqualsTwentyStraight() throws Exception {
        List<StepResult> straight = PretrainRunner.run(args("--train-iters", "20"));
        Path ckpt = tmp.resolve("ckpt");
        PretrainRunner.run(args("--train-iters", "10", "--save", ckpt.toString()));
        Path metrics = tmp.resolve("resumed.jsonl");
        ForkedCli.run(Map.of(), tmp.resolve("resume.log"), cli("--train-iters", "20",
                "--load", ckpt.toString(), "--metrics-out", metrics.toString()));
        List<double[]> resumed = ForkedCli.metrics(metrics);
        assertThat(resumed).hasSize(10);
        for (double[] m : resumed) {
            StepResult s = straight.get((int) m[0] - 1);
            assertThat(m[1]).as("loss at iteration %d", (int) m[0]).isEqualTo(s.loss());
            assertThat(m[2]).as("grad norm at iteration %d", (int) m[0]).isEqualTo(s.gradNorm());
        }
    }

    @Test
    void killedDuringSaveLeavesThePreviousCheckpointCurrent() throws Exception {
        Path ckpt = tmp.resolve("ckpt");
        Path log = tmp.resolve("killed.log");
        Process p = ForkedCli.start(List.of("-Ddjlm.test.pauseInSaveAtIteration=4"), Map.of(), log,
                cli("--train-iters", "6", "--save", ckpt.toString(), "--save-interval", "2"));
        waitForLine(log, "SAVE-IN-PROGRESS", p);
        p.destroyForcibly().waitFor(30, TimeUnit.SECONDS);

        assertThat(Files.readString(ckpt.resolve("latest_checkpointed_iteration.txt")).strip()).isEqualTo("2");
        assertThat(ckpt.resolve("iter_0000004")).doesNotExist();
        assertThat(TrainingCheckpoint.latest(ckpt)).isEqualTo(ckpt.resolve("iter_0000002"));
        List<StepResult> resumed = PretrainRunner.run(args("--train-iters", "4", "--load", ckpt.toString()));
        assertThat(resumed).extracting(StepResult::iteration).containsExactly(3L, 4L);
        assertThat(Files.readString(ckpt.resolve("latest_checkpointed_iteration.txt")).strip()).isEqualTo("2");
    }

    private static void waitForLine(Path log, String marker, Process p) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(240);
        while (System.nanoTime() < deadline) {
            if (Files.exists(log) && Files.readString(log, StandardCharsets.UTF_8).contains(marker)) {
                return;
            }
            if (!p.isAlive()) {
                throw new AssertionError("forked JVM ended before " + marker + ":\n" + Files.readString(log));
            }
            Thread.sleep(100);
        }
        p.destroyForcibly();
        throw new AssertionError("no " + marker + " within 240 s:\n" + Files.readString(log));
    }

}
