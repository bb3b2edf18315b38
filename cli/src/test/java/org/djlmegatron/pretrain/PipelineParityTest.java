package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;
import static org.djlmegatron.pretrain.TrajectoryParity.PP2;
import static org.djlmegatron.pretrain.TrajectoryParity.PP2_DP2_DISTOPT;
import static org.djlmegatron.pretrain.TrajectoryParity.PP2_TP2_SP;
import static org.djlmegatron.pretrain.TrajectoryParity.PP2_VP2;
import static org.djlmegatron.pretrain.TrajectoryParity.PP4;
import static org.djlmegatron.pretrain.TrajectoryParity.SINGLE;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.djlmegatron.comm.ThreadProcessGroup;
import org.djlmegatron.pretrain.TrajectoryParity.Variant;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import picocli.CommandLine;

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

    /**
     * Context parallelism inside the stages: each stage's attention exchanges K/V over its CP group,
     * stages hand each other this rank's two sequence chunks ([b, s/CP, h]) and the last stage's
     * loss is this rank's share of the sequence mean. CP=2 x PP=2 (world 4) with ring (p2p),
     * all-gather and Ulysses (a2a) attention follows the one-rank trajectory.
     */
    @Test
    void contextParallelInsideTheStagesFollowsTheOneRankTrajectory() {
        List<String> base = base(4, false);
        List<StepResult> reference = TrajectoryParity.run(base, SINGLE);
        for (String comm : new String[] {"p2p", "all_gather", "a2a"}) {
            Variant v = TrajectoryParity.cpPp2(2, comm);
            TrajectoryParity.assertClose(reference, TrajectoryParity.run(base, v), 1e-5, v.name());
        }
    }

    /**
     * Interleaved 1F1B (Megatron's virtual stages: chunk c of rank r holds virtual stage c p + r,
     * so activations travel rank 0, 1, 0, 1): PP=2 x VP=2 over 4 layers, and the same chunks
     * given by {@code --num-layers-per-virtual-pipeline-stage 1}, give the one-rank trajectory.
     */
    @ParameterizedTest(name = "tied {0}")
    @ValueSource(booleans = {true, false})
    void interleavedVirtualStagesFollowTheOneRankTrajectory(boolean tied) {
        List<String> base = base(4, tied);
        List<StepResult> reference = TrajectoryParity.run(base, SINGLE);
        TrajectoryParity.assertClose(reference, TrajectoryParity.run(base, PP2_VP2), 1e-5, PP2_VP2 + " tied " + tied);
        Variant perStage = Variant.of("pp2-layers-per-virtual-stage-1", "--nproc-per-node", "2",
                "--pipeline-model-parallel-size", "2", "--num-layers-per-virtual-pipeline-stage", "1");
        TrajectoryParity.assertClose(reference, TrajectoryParity.run(base, perStage), 1e-5, perStage + " tied " + tied);
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

    /**
     * fp16 (static loss scale): stages exchange the hidden states in their compute dtype (fp32 for
     * fp16 weights, as every layer computes), so PP=2 and PP=2 x VP=2 follow the one-rank fp16 run
     * (5 iterations). With tied embeddings the word embedding's fp16 gradient is the sum of the
     * first and last stages' fp16 parts, rounded in another order than one rank's accumulation:
     * within 1e-4 there.
     */
    @Test
    void fp16FollowsTheOneRankFp16Trajectory() {
        for (boolean tied : new boolean[] {false, true}) {
            List<String> base = TrajectoryParity.replace(base(4, tied), "--train-iters", "5");
            base.addAll(List.of("--fp16", "--loss-scale", "1024"));
            // the same step as the pipeline's: the flat one on the stock engine (16-bit accumulation over the
            // micro-batches), the buffers on the native library (each micro-batch added into the fp32 main gradient)
            List<StepResult> reference = TrajectoryParity.run(base, SINGLE);
            for (Variant v : tied ? new Variant[] {PP2} : new Variant[] {PP2, PP2_VP2}) {
                TrajectoryParity.assertClose(reference, TrajectoryParity.run(base, v), tied ? 1e-4 : 1e-5,
                        v + " fp16 tied " + tied);
            }
        }
    }

    /** The validation loss {@code pretrain-gpt} prints at iteration {@code iteration}, run with strict sends. */
    static double validationLoss(List<String> base, Variant v, int iteration) {
        List<String> a = new ArrayList<>(base);
        a.addAll(v.flags());
        PretrainOptions o = new PretrainOptions();
        new CommandLine(o).parseArgs(a.toArray(new String[0]));
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        String key = ThreadProcessGroup.STRICT_SENDS_PROPERTY;
        System.setProperty(key, "true");
        try {
            new PretrainGpt(o, new PrintStream(bytes, true, StandardCharsets.UTF_8)).run();
        } finally {
            System.clearProperty(key);
        }
        String log = bytes.toString(StandardCharsets.UTF_8);
        Matcher m = Pattern.compile("validation loss at iteration " + iteration
                + " \\| lm loss value: (\\S+) ").matcher(log);
        if (!m.find()) {
            throw new AssertionError(v + ": no validation loss at iteration " + iteration + " in\n" + log);
        }
        return Double.parseDouble(m.group(1));
    }

    /** Evaluation runs Megatron's forward-only schedule over the stages (and the chunks): the one-rank loss. */
    @Test
    void evaluationWithTheForwardOnlySchedule() {
        List<String> base = TrajectoryParity.replace(base(4, true), "--train-iters", "2");
        base.addAll(List.of("--eval-interval", "2", "--eval-iters", "2"));
        double reference = validationLoss(base, SINGLE, 2);
        for (Variant v : new Variant[] {PP2, PP4, PP2_VP2}) {
            assertThat(validationLoss(base, v, 2)).as(v.name())
                    .isCloseTo(reference, within(1e-5 * Math.max(1, reference)));
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
        assertThatThrownBy(() -> TrajectoryParity.run(TrajectoryParity.replace(base(4, true), "--global-batch-size", "5"),
                PP2_VP2))
                .hasMessageContaining("interleaved schedule: 5 micro-batches in groups of 2 leave a last group of 1");
        assertThatThrownBy(() -> TrajectoryParity.run(base(4, true), PP2.with(Variant.of("vp4",
                "--virtual-pipeline-model-parallel-size", "4"))))
                .hasMessageContaining("--num-layers 4 is not divisible by --pipeline-model-parallel-size 2 x "
                        + "--virtual-pipeline-model-parallel-size 4 = 8");
    }
}
