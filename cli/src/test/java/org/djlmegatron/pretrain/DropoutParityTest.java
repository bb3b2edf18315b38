package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.djlmegatron.pretrain.TrajectoryParity.DP2_DISTOPT;
import static org.djlmegatron.pretrain.TrajectoryParity.SINGLE;
import static org.djlmegatron.pretrain.TrajectoryParity.TP2;
import static org.djlmegatron.pretrain.TrajectoryParity.TP2_SP;

import java.util.List;
import org.djlmegatron.pretrain.TrajectoryParity.Variant;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Dropout at p = 0.1 (hidden and attention) whose masks are functions of the sample, not of how the
 * model is split: TP=1, TP=2, TP=2 + SP, DP=2 and recomputation on or off follow one trajectory; the
 * same seed repeats a run bit for bit; another seed changes it; p = 0 is the run without dropout.
 */
class DropoutParityTest {

    private static final List<String> BASE = TrajectoryParity.args("--mock-data", "--num-layers", "2",
            "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128",
            "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "10", "--lr", "3e-3",
            "--lr-decay-style", "constant", "--hidden-dropout", "0.1", "--attention-dropout", "0.1", "--seed", "5");

    private static final Variant FULL_RECOMPUTE = Variant.of("full-recompute", "--recompute-granularity", "full",
            "--recompute-method", "uniform", "--recompute-num-layers", "1");
    private static final Variant SELECTIVE = Variant.of("selective", "--recompute-granularity", "selective",
            "--recompute-modules", "core_attn,mlp,layernorm");

    @Test
    void everyLayoutAndRecomputationFollowsTheSingleRankTrajectory() {
        List<StepResult> reference = TrajectoryParity.run(BASE, SINGLE);
        for (Variant v : new Variant[] {TP2, TP2_SP, DP2_DISTOPT, SINGLE.with(FULL_RECOMPUTE), TP2_SP.with(SELECTIVE),
            DP2_DISTOPT.with(FULL_RECOMPUTE)}) {
            TrajectoryParity.assertClose(reference, TrajectoryParity.run(BASE, v), 1e-5, v.name());
        }
    }

    @Test
    void recomputationAppliesTheSameMasksBitForBit() {
        TrajectoryParity.assertIdentical(TrajectoryParity.run(BASE, TP2_SP),
                TrajectoryParity.run(BASE, TP2_SP.with(FULL_RECOMPUTE)), "tp2-sp, full recomputation");
    }

    @Test
    void theSameSeedRepeatsARunAndTheMasksMatter() {
        List<StepResult> a = TrajectoryParity.run(BASE, TP2);
        TrajectoryParity.assertIdentical(a, TrajectoryParity.run(BASE, TP2), "same seed");
        List<StepResult> noDropout = TrajectoryParity.run(
                TrajectoryParity.replace(TrajectoryParity.replace(BASE, "--hidden-dropout", "0"), "--attention-dropout", "0"),
                TP2);
        assertThat(Math.abs(noDropout.get(0).loss() - a.get(0).loss())).as("dropout changes the first loss")
                .isGreaterThan(1e-3);
        List<StepResult> c = TrajectoryParity.run(TrajectoryParity.replace(BASE, "--seed", "6"), TP2);
        assertThat(c.get(0).loss()).as("the seed draws the masks (and the weights)").isNotEqualTo(a.get(0).loss());
    }

    @ParameterizedTest
    @ValueSource(strings = {"-0.1", "1", "1.5", "NaN"})
    void aProbabilityOutsideZeroOneIsRefused(String p) {
        assertThatThrownBy(() -> TrajectoryParity.run(TrajectoryParity.replace(BASE, "--hidden-dropout", p), SINGLE))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("--hidden-dropout").hasMessageContaining("[0, 1)");
        assertThatThrownBy(() -> TrajectoryParity.run(TrajectoryParity.replace(BASE, "--attention-dropout", p), SINGLE))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("--attention-dropout").hasMessageContaining("[0, 1)");
    }
}
