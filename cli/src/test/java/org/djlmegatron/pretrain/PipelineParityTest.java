package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.djlmegatron.pretrain.TrajectoryParity.PP2;
import static org.djlmegatron.pretrain.TrajectoryParity.PP2_DP2_DISTOPT;
import static org.djlmegatron.pretrain.TrajectoryParity.PP2_TP2_SP;
import static org.djlmegatron.pretrain.TrajectoryParity.PP4;
import static org.djlmegatron.pretrain.TrajectoryParity.SINGLE;

import java.util.List;
import org.djlmegatron.pretrain.TrajectoryParity.Variant;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Pipeline parallelism (1F1B) changes where layers run, not what they compute: a 4-layer model
 * (and a 3-layer one split 1 + 2) trained for 10 iterations of 8 micro-batches gives the one-rank
 * trajectory within 1e-5 at PP=2, PP=4, uneven stages, PP=2 x TP=2 + SP and PP=2 x DP=2 with the
 * distributed optimizer, with tied and untied embeddings; with dropout and recomputation too.
 */
class PipelineParityTest {

    private static List<String> base(int layers, boolean tied) {
        List<String> a = TrajectoryParity.args("--mock-data", "--num-layers", "" + layers,
                "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128",
                "--micro-batch-size", "1", "--global-batch-size", "8", "--train-iters", "10", "--lr", "3e-3",
                "--lr-decay-style", "constant", "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", "11");
        if (!tied) {
            a.add("--untie-embeddings-and-output-weights");
        }
        return a;
    }

    @ParameterizedTest(name = "tied {0}")
    @ValueSource(booleans = {true, false})
    void fourLayersAtEveryPipelineLayoutFollowTheOneRankTrajectory(boolean tied) {
        List<String> base = base(4, tied);
        List<StepResult> reference = TrajectoryParity.run(base, SINGLE);
        for (Variant v : new Variant[] {PP2, PP4, PP2.with(Variant.of("first1", "--decoder-first-pipeline-num-layers", "1")),
                PP2_TP2_SP, PP2_DP2_DISTOPT}) {
            TrajectoryParity.assertClose(reference, TrajectoryParity.run(base, v), 1e-5, v + " tied " + tied);
        }
    }

    @ParameterizedTest(name = "tied {0}")
    @ValueSource(booleans = {true, false})
    void threeLayersWithOneOnTheFirstStage(boolean tied) {
        List<String> base = base(3, tied);
        List<StepResult> reference = TrajectoryParity.run(base, SINGLE);
        Variant uneven = PP2.with(Variant.of("first1", "--decoder-first-pipeline-num-layers", "1"));
        TrajectoryParity.assertClose(reference, TrajectoryParity.run(base, uneven), 1e-5, uneven + " tied " + tied);
    }

    /**
     * Dropout masks are functions of the global layer number and the sample, and recomputation
     * re-runs a stage's own layers: both give the one-rank trajectory at PP=2 too.
     */
    @Test
    void dropoutAndRecomputationPerStage() {
        List<String> base = base(4, true);
        base.addAll(List.of("--hidden-dropout", "0.1", "--attention-dropout", "0.1"));
        List<StepResult> reference = TrajectoryParity.run(base, SINGLE);
        Variant recompute = Variant.of("full-recompute", "--recompute-granularity", "full", "--recompute-method",
                "uniform", "--recompute-num-layers", "1");
        for (Variant v : new Variant[] {PP2, PP2.with(recompute), PP4.with(Variant.of("selective",
                "--recompute-granularity", "selective", "--recompute-modules", "core_attn,mlp,layernorm"))}) {
            TrajectoryParity.assertClose(reference, TrajectoryParity.run(base, v), 1e-5, v + " with dropout");
        }
    }

    @Test
    void impossibleSplitsAreRefusedBeforeAnyWorkNamingTheNumbers() {
        assertThatThrownBy(() -> TrajectoryParity.run(base(3, true), PP2))
                .hasMessageContaining("--num-layers 3 is not divisible by --pipeline-model-parallel-size 2 = 2");
        assertThatThrownBy(() -> TrajectoryParity.run(base(4, true),
                PP2.with(Variant.of("bad", "--decoder-first-pipeline-num-layers", "1", "--decoder-last-pipeline-num-layers", "2"))))
                .hasMessageContaining("--num-layers 4 cannot be split over --pipeline-model-parallel-size 2 with "
                        + "--decoder-first-pipeline-num-layers 1 and --decoder-last-pipeline-num-layers 2");
    }
}
