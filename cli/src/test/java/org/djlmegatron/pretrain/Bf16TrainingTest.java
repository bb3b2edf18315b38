package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.engine.TorchNative;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code pretrain-gpt --bf16} on the project's native library (CPU here): bf16 weights and
 * arithmetic with fp32 masters train the reference small GPT as fp32 does, and checkpoint.
 */
@Tag("native")
class Bf16TrainingTest {

    private static final int ITERS = 60;

    @TempDir
    Path tmp;

    @BeforeAll
    static void runsOnTheNativeLibrary() {
        assertThat(TorchNative.isAvailable()).as("the native profile runs DJL on the project's library").isTrue();
    }

    private static String[] args(String... more) {
        List<String> a = new ArrayList<>(List.of("--mock-data", "--num-layers", "2", "--hidden-size", "64",
                "--num-attention-heads", "4", "--num-query-groups", "2", "--seq-length", "32", "--vocab-size", "128",
                "--micro-batch-size", "4", "--global-batch-size", "8", "--lr", "3e-3", "--lr-decay-style", "constant",
                "--seed", "7", "--train-iters", String.valueOf(ITERS), "--normalization", "RMSNorm", "--swiglu",
                "--position-embedding-type", "rope", "--nproc-per-node", "2", "--tensor-model-parallel-size", "2",
                "--sequence-parallel"));
        a.addAll(List.of(more));
        return a.toArray(new String[0]);
    }

    private static double meanLossOfLast(List<StepResult> r, int n) {
        return r.subList(r.size() - n, r.size()).stream().mapToDouble(StepResult::loss).average().orElseThrow();
    }

    @Test
    void bf16TrainsLikeFp32() {
        List<StepResult> fp32 = PretrainRunner.run(args("--attention-backend", "unfused"));
        List<StepResult> bf16 = PretrainRunner.run(args("--bf16", "--save", tmp.resolve("ckpt").toString()));
        assertThat(bf16).hasSize(ITERS);
        for (StepResult s : bf16) {
            assertThat(s.loss()).as("loss at iteration %d", s.iteration()).isFinite();
            assertThat(s.skipped()).as("bf16 needs no loss scaling, nothing is skipped").isFalse();
            assertThat(s.lossScale()).isEqualTo(1.0);
        }
        // the first loss is the same model's: bf16 rounding only
        assertThat(bf16.get(0).loss()).isCloseTo(fp32.get(0).loss(), org.assertj.core.data.Percentage.withPercentage(1));
        double first = bf16.get(0).loss();
        double lastBf16 = meanLossOfLast(bf16, 10);
        double lastFp32 = meanLossOfLast(fp32, 10);
        assertThat(lastBf16).as("bf16 learns: mean of the last 10 vs the first %.4f", first).isLessThan(first - 1.0);
        assertThat(lastBf16).as("and ends where fp32 ends (%.4f)", lastFp32).isCloseTo(lastFp32,
                org.assertj.core.data.Offset.offset(0.15));
        assertThat(tmp.resolve("ckpt/latest_checkpointed_iteration.txt")).hasContent(String.valueOf(ITERS));
    }

    /** Recomputation in bf16 with the fused attention (and with dropout, which the composed path applies) is exact. */
    @Test
    void bf16RecomputationReproducesTheRunBitForBit() {
        List<String> base = TrajectoryParity.replace(List.of(args("--bf16")), "--train-iters", "8");
        TrajectoryParity.Variant full = TrajectoryParity.Variant.of("full", "--recompute-granularity", "full",
                "--recompute-method", "uniform", "--recompute-num-layers", "1");
        TrajectoryParity.Variant selective = TrajectoryParity.Variant.of("selective", "--recompute-activations");
        TrajectoryParity.Variant noDropout = TrajectoryParity.Variant.of("fused", "--hidden-dropout", "0",
                "--attention-dropout", "0", "--attention-backend", "fused");
        TrajectoryParity.Variant dropout = TrajectoryParity.Variant.of("dropout", "--hidden-dropout", "0.1",
                "--attention-dropout", "0.1");
        for (TrajectoryParity.Variant v : new TrajectoryParity.Variant[] {noDropout, dropout}) {
            List<StepResult> plain = TrajectoryParity.run(base, v);
            TrajectoryParity.assertIdentical(plain, TrajectoryParity.run(base, v.with(full)), "bf16 " + v.with(full));
            TrajectoryParity.assertIdentical(plain, TrajectoryParity.run(base, v.with(selective)), "bf16 " + v.with(selective));
        }
    }

    /**
     * bf16 at PP=2 (x TP=2 + SP): stages exchange bf16 hidden states, as Megatron's pipeline_dtype;
     * without dropout (whose fp32 masks promote the one-rank run's hidden states to fp32) and with
     * untied embeddings, the pipeline computes what one stage computes.
     */
    @Test
    void bf16AtPipelineSizeTwoFollowsTheRunWithoutPipelining() {
        List<String> base = TrajectoryParity.replace(List.of(args("--bf16", "--hidden-dropout", "0",
                "--attention-dropout", "0", "--untie-embeddings-and-output-weights")), "--train-iters", "6");
        // the same step both ways: the buffers, which add each micro-batch's bf16 gradients into the fp32 main gradient
        List<StepResult> plain = TrajectoryParity.run(base, TrajectoryParity.Variant.of("tp2-sp"));
        List<StepResult> piped = TrajectoryParity.run(TrajectoryParity.replace(base, "--nproc-per-node", "4"),
                TrajectoryParity.Variant.of("pp2", "--pipeline-model-parallel-size", "2"));
        TrajectoryParity.assertClose(plain, piped, 1e-3, "bf16 pp2 x tp2 + sp");
    }
}
