package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A TP2 x DP2 run with the distributed optimizer, saved at iteration 5, resumed at other
 * layouts of the same 4 ranks: the next five losses are the uninterrupted run's.
 */
class ReshardResumeTest {

    private static final double TOLERANCE = 1e-5;

    @TempDir
    static Path tmp;

    private static Path ckpt;
    private static List<StepResult> straight;

    private static final String[] MODEL = {"--mock-data", "--num-layers", "2", "--hidden-size", "32",
        "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128", "--lr", "3e-3",
        "--lr-warmup-iters", "2", "--lr-decay-style", "cosine", "--lr-decay-iters", "20", "--weight-decay", "0.1",
        "--seed", "7"};

    /** The model's flags, then {@code more}, with batch and rank defaults unless {@code more} sets them. */
    private static String[] args(String... more) {
        List<String> a = new ArrayList<>(List.of(MODEL));
        a.addAll(List.of(more));
        String[][] defaults = {{"--nproc-per-node", "4"}, {"--micro-batch-size", "1"}, {"--global-batch-size", "4"}};
        for (String[] d : defaults) {
            if (!a.contains(d[0])) {
                a.addAll(List.of(d));
            }
        }
        return a.toArray(new String[0]);
    }

    @BeforeAll
    static void saveAtFiveAndRunStraight() {
        ckpt = tmp.resolve("ckpt");
        String[] tp2dp2 = {"--tensor-model-parallel-size", "2", "--use-distributed-optimizer"};
        straight = PretrainRunner.run(args(concat(tp2dp2, "--train-iters", "10")));
        PretrainRunner.run(args(concat(tp2dp2, "--train-iters", "5", "--save", ckpt.toString())));
    }

    @Test
    void resumesAtTp1Dp4WithTheDistributedOptimizer() {
        assertContinues("--tensor-model-parallel-size", "1", "--use-distributed-optimizer");
    }

    @Test
    void resumesAtTp4Dp1() {
        assertContinues("--tensor-model-parallel-size", "4", "--use-distributed-optimizer");
    }

    @Test
    void resumesAtTp2Dp2WithAndWithoutTheDistributedOptimizer() {
        assertContinues("--tensor-model-parallel-size", "2", "--use-distributed-optimizer");
        assertContinues("--tensor-model-parallel-size", "2");
    }

    @Test
    void resumesAtTp1Dp4WithoutTheDistributedOptimizerAndSequenceParallelTp4() {
        assertContinues("--tensor-model-parallel-size", "1");
        assertContinues("--tensor-model-parallel-size", "4", "--sequence-parallel");
    }

    @Test
    void aCheckpointWithoutTheDistributedOptimizerResumesShardedOverDp() {
        Path plain = tmp.resolve("plain");
        PretrainRunner.run(args("--tensor-model-parallel-size", "2", "--train-iters", "5", "--save", plain.toString()));
        assertContinues(plain, "--tensor-model-parallel-size", "1", "--use-distributed-optimizer");
        assertContinues(plain, "--tensor-model-parallel-size", "4", "--nproc-per-node", "8",
                "--global-batch-size", "4", "--micro-batch-size", "2");
    }

    @Test
    void noLoadOptimKeepsTheIterationAndStartsTheOptimizerAfresh() {
        List<StepResult> r = PretrainRunner.run(args("--tensor-model-parallel-size", "4", "--train-iters", "10",
                "--load", ckpt.toString(), "--no-load-optim"));
        assertThat(r).extracting(StepResult::iteration).containsExactly(6L, 7L, 8L, 9L, 10L);
        // a fresh Adam (and warmup) moves differently: the state above really is carried over
        double maxDiff = 0;
        for (StepResult s : r) {
            maxDiff = Math.max(maxDiff, Math.abs(s.loss() - straight.get((int) s.iteration() - 1).loss()));
        }
        assertThat(maxDiff).isGreaterThan(100 * TOLERANCE);
    }

    @Test
    void finetuneTakesTheWeightsOnly() {
        List<StepResult> r = PretrainRunner.run(args("--tensor-model-parallel-size", "1", "--train-iters", "3",
                "--global-batch-size", "8", "--load", ckpt.toString(), "--finetune", "--no-load-rng"));
        assertThat(r).extracting(StepResult::iteration).containsExactly(1L, 2L, 3L);
        assertThat(r.get(0).loss()).isLessThan(straight.get(0).loss() - 0.05); // trained weights, not random
    }

    @Test
    void layoutsTheModelCannotTakeAreRefusedBeforeAnyWork() {
        assertThatThrownBy(() -> PretrainRunner.run(args("--tensor-model-parallel-size", "8", "--nproc-per-node", "8",
                "--train-iters", "10", "--load", ckpt.toString())))
                .hasMessageContaining("does not divide the 4 attention heads");
        assertThatThrownBy(() -> PretrainRunner.run(args("--tensor-model-parallel-size", "1",
                "--micro-batch-size", "3", "--train-iters", "10", "--load", ckpt.toString())))
                .hasMessageContaining("not divisible by micro batch size 3 x data-parallel size 4");
        assertThatThrownBy(() -> PretrainRunner.run(args("--tensor-model-parallel-size", "1",
                "--global-batch-size", "8", "--train-iters", "10", "--load", ckpt.toString())))
                .hasMessageContaining("trainer_state.json")
                .hasMessageContaining("global batch size 4, resumed with 8")
                .hasMessageContaining("--finetune");
    }

    private void assertContinues(String... layout) {
        assertContinues(ckpt, layout);
    }

    private void assertContinues(Path from, String... layout) {
        List<StepResult> r = PretrainRunner.run(args(concat(layout, "--train-iters", "10", "--load", from.toString())));
        assertThat(r).extracting(StepResult::iteration).containsExactly(6L, 7L, 8L, 9L, 10L);
        for (StepResult s : r) {
            StepResult ref = straight.get((int) s.iteration() - 1);
            assertThat(s.loss()).as("loss at iteration %d, %s", s.iteration(), String.join(" ", layout))
                    .isCloseTo(ref.loss(), within(TOLERANCE));
            assertThat(s.lr()).as("lr at iteration %d", s.iteration()).isEqualTo(ref.lr());
        }
    }

    private static String[] concat(String[] a, String... b) {
        List<String> all = new ArrayList<>(List.of(a));
        all.addAll(List.of(b));
        return all.toArray(new String[0]);
    }
}
