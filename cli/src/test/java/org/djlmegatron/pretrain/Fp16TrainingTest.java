package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code pretrain-gpt --fp16}: dynamic loss scaling on a small GPT over mock data. */
class Fp16TrainingTest {

    private static final int ITERS = 60;
    private static final double LR = 3e-3;

    @TempDir
    Path tmp;

    private static String[] args(String... more) {
        List<String> a = new ArrayList<>(List.of("--mock-data", "--num-layers", "2", "--hidden-size", "64",
                "--num-attention-heads", "4", "--seq-length", "32", "--vocab-size", "128", "--micro-batch-size", "4",
                "--lr", String.valueOf(LR), "--lr-decay-style", "constant", "--seed", "7"));
        a.addAll(List.of(more));
        return a.toArray(new String[0]);
    }

    private static double meanLossOfLast(List<StepResult> r, int n) {
        return r.subList(r.size() - n, r.size()).stream().mapToDouble(StepResult::loss).average().orElseThrow();
    }

    private static void assertNoNanLoss(List<StepResult> r) {
        for (StepResult s : r) {
            assertThat(s.loss()).as("loss at iteration %d", s.iteration()).isFinite();
        }
    }

    @Test
    void fp16TrainingConvergesWithTheDynamicScaleStartingAtTheInitialScale() {
        List<StepResult> r = PretrainRunner.run(args("--fp16", "--train-iters", String.valueOf(ITERS),
                "--initial-loss-scale", "4096"));
        assertThat(r).hasSize(ITERS);
        assertNoNanLoss(r);
        assertThat(r.get(0).lossScale()).isEqualTo(4096.0);
        long skipped = r.stream().filter(StepResult::skipped).count();
        assertThat(skipped).as("a modest scale does not overflow fp16 gradients").isLessThanOrEqualTo(2);
        for (StepResult s : r) {
            assertThat(s.lossScale()).as("scale at iteration %d", s.iteration()).isLessThanOrEqualTo(4096.0);
            if (!s.skipped()) {
                assertThat(s.lr()).isEqualTo(LR);
                assertThat(s.gradNorm()).as("grad norm at iteration %d", s.iteration()).isFinite().isPositive();
            }
        }
        double first = r.get(0).loss();
        assertThat(meanLossOfLast(r, 10)).as("mean loss of the last 10 iterations vs the first %.4f", first)
                .isLessThanOrEqualTo(first - 0.3);
    }

    @Test
    void aHugeInitialScaleOverflowsBacksOffAndThenTrains() {
        double initial = Math.pow(2, 40);
        List<StepResult> r = PretrainRunner.run(args("--fp16", "--train-iters", String.valueOf(ITERS),
                "--initial-loss-scale", String.valueOf(initial)));
        assertThat(r).hasSize(ITERS);
        assertNoNanLoss(r);
        assertThat(r.get(0).lossScale()).isEqualTo(initial);
        assertThat(r.get(0).skipped()).as("2^40 overflows fp16 gradients").isTrue();

        int leading = 0;
        while (leading < r.size() && r.get(leading).skipped()) {
            leading++;
        }
        assertThat(leading).as("skipped iterations at the start").isBetween(3, ITERS - 25);
        // hysteresis 2 (Megatron's default): the first overflow keeps the scale, every later one halves it
        assertThat(r.get(1).lossScale()).isEqualTo(initial);
        for (int i = 2; i <= leading; i++) {
            assertThat(r.get(i).lossScale()).as("scale at iteration %d", i + 1)
                    .isEqualTo(r.get(i - 1).lossScale() / 2);
        }
        for (int i = 0; i < leading; i++) {
            StepResult s = r.get(i);
            assertThat(s.lr()).isEqualTo(0.0);
            assertThat(s.gradNorm()).isNaN();
        }
        // then training proceeds, at a scale that no longer overflows
        StepResult firstUpdate = r.get(leading);
        assertThat(firstUpdate.lossScale()).isLessThan(initial / 8);
        assertThat(firstUpdate.lr()).isEqualTo(LR);
        assertThat(firstUpdate.gradNorm()).isFinite().isPositive();
        List<StepResult> rest = r.subList(leading, r.size());
        long laterSkips = rest.stream().filter(StepResult::skipped).count();
        assertThat(laterSkips).as("skips once the scale has settled").isLessThanOrEqualTo(3);
        for (int i = 1; i < rest.size(); i++) {
            assertThat(rest.get(i).lossScale()).isLessThanOrEqualTo(rest.get(i - 1).lossScale());
        }
        double first = r.get(0).loss();
        assertThat(meanLossOfLast(r, 10)).as("mean loss of the last 10 iterations vs the first %.4f", first)
                .isLessThanOrEqualTo(first - 0.3);
    }

    @Test
    void aStaticLossScaleNeverChanges() {
        List<StepResult> r = PretrainRunner.run(args("--fp16", "--train-iters", "8", "--loss-scale", "1024"));
        assertThat(r).hasSize(8);
        for (StepResult s : r) {
            assertThat(s.lossScale()).isEqualTo(1024.0);
            assertThat(s.skipped()).isFalse();
            assertThat(s.loss()).isFinite();
        }
        // fp32 reports no scaling, and fp16 at this scale follows fp32 closely at the start
        List<StepResult> fp32 = PretrainRunner.run(args("--train-iters", "2"));
        assertThat(fp32.get(0).lossScale()).isEqualTo(1.0);
        assertThat(r.get(0).loss()).isCloseTo(fp32.get(0).loss(), within(0.01));
    }

    @Test
    @Tag("stock-engine") // on the native library --bf16 trains (Bf16TrainingTest)
    void bf16WithoutTheNativeLibraryFailsClearlyBeforeAnyWork() {
        Path save = tmp.resolve("ckpt");
        Path metrics = tmp.resolve("metrics.jsonl");
        assertThatThrownBy(() -> PretrainRunner.run(args("--bf16", "--train-iters", "5", "--save", save.toString(),
                "--metrics-out", metrics.toString())))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("--bf16")
                .hasMessageContaining("bfloat16")
                .hasMessageContaining("native library");
        assertThat(save).doesNotExist();
        assertThat(metrics).doesNotExist();
    }

    @Test
    @Tag("stock-engine")
    void fusedAttentionWithoutTheNativeLibraryFailsClearly() {
        assertThatThrownBy(() -> PretrainRunner.run(args("--attention-backend", "fused", "--train-iters", "1")))
                .isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("--attention-backend fused needs the djl-megatron native library");
    }

    @Test
    void fp16AndBf16TogetherAndUnknownBackendsOrDevicesAreRefused() {
        assertThatThrownBy(() -> PretrainRunner.run(args("--fp16", "--bf16", "--train-iters", "1")))
                .hasMessageContaining("give --fp16 or --bf16, not both");
        assertThatThrownBy(() -> PretrainRunner.run(args("--attention-backend", "flash", "--train-iters", "1")))
                .hasMessageContaining("--attention-backend must be auto, fused or unfused, found flash");
        assertThatThrownBy(() -> PretrainRunner.run(args("--device", "tpu", "--train-iters", "1")))
                .hasMessageContaining("--device must be auto, cpu or cuda, found tpu");
        assertThatThrownBy(() -> PretrainRunner.run(args("--device", "cuda", "--train-iters", "1")))
                .hasMessageContaining("--device cuda: 1 ranks in this JVM but the engine sees 0 CUDA device(s)");
    }

    /** fp16 with dynamic loss scaling: full and selective recomputation reproduce the run bit for bit. */
    @Test
    void fp16RecomputationReproducesTheRunBitForBit() {
        List<String> base = List.of(args("--fp16", "--train-iters", "6", "--nproc-per-node", "2",
                "--tensor-model-parallel-size", "2", "--sequence-parallel"));
        TrajectoryParity.Variant none = TrajectoryParity.Variant.of("none");
        List<StepResult> plain = TrajectoryParity.run(base, none);
        TrajectoryParity.assertIdentical(plain, TrajectoryParity.run(base, TrajectoryParity.Variant.of("full",
                "--recompute-granularity", "full", "--recompute-method", "block", "--recompute-num-layers", "2")), "fp16 full");
        TrajectoryParity.assertIdentical(plain, TrajectoryParity.run(base, TrajectoryParity.Variant.of("selective",
                "--recompute-granularity", "selective", "--recompute-modules", "core_attn,mlp,layernorm")), "fp16 selective");
    }
}
