package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.djlmegatron.pretrain.TrajectoryParity.DISTOPT;
import static org.djlmegatron.pretrain.TrajectoryParity.EP2;
import static org.djlmegatron.pretrain.TrajectoryParity.EP2_ALLGATHER;
import static org.djlmegatron.pretrain.TrajectoryParity.EP2_TP2_SP;
import static org.djlmegatron.pretrain.TrajectoryParity.SINGLE;

import java.nio.file.Path;
import java.util.List;
import org.djlmegatron.pretrain.TrajectoryParity.Variant;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Expert parallelism with the balancing losses on: the mixtral fixture's weights trained 5
 * iterations on mock data (24-token sequences, so TP=2 + SP applies) with the load-balancing and
 * z losses follow the one-rank trajectory within 1e-5 at EP=2 (both dispatchers, with and
 * without the distributed optimizer) and at EP=2 x TP=2 + SP (world 4); recomputing the MoE block
 * at EP=2 changes nothing, bit for bit; the grouped GEMM follows the per-expert loop.
 */
class MoeParityTest {

    static List<String> base(String balancing, String score) {
        Path dir = PretrainRunner.fixtures().resolve("hf").resolve("mixtral");
        return TrajectoryParity.args("--init-hf", dir.toString(), "--mock-data", "--seq-length", "24",
                "--train-iters", "5", "--micro-batch-size", "1", "--global-batch-size", "4", "--lr", "1e-3",
                "--lr-decay-style", "constant", "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", "7",
                "--moe-router-load-balancing-type", balancing, "--moe-aux-loss-coeff", "0.01",
                "--moe-z-loss-coeff", "0.001", "--moe-router-score-function", score);
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"aux_loss/softmax", "seq_aux_loss/sigmoid"})
    void expertParallelLayoutsFollowTheOneRankTrajectory(String setting) {
        String[] s = setting.split("/");
        List<String> base = base(s[0], s[1]);
        List<StepResult> reference = TrajectoryParity.run(base, SINGLE);

        // the losses are really on: without them the gradients differ
        List<String> off = TrajectoryParity.replace(TrajectoryParity.replace(base, "--moe-aux-loss-coeff", "0"),
                "--moe-z-loss-coeff", "0");
        List<StepResult> without = TrajectoryParity.run(off, SINGLE);
        assertThat(Math.abs(without.get(0).gradNorm() - reference.get(0).gradNorm()))
                .as("the balancing losses change the first gradient").isGreaterThan(1e-6);

        for (Variant v : List.of(EP2_ALLGATHER, EP2.with(DISTOPT), EP2_TP2_SP, EP2_TP2_SP.with(DISTOPT))) {
            TrajectoryParity.assertClose(reference, TrajectoryParity.run(base, v), 1e-5, setting + " " + v);
        }
        // recomputing the MoE block replays the exchange and the extra loss roots exactly
        List<StepResult> ep2 = TrajectoryParity.run(base, EP2);
        TrajectoryParity.assertClose(reference, ep2, 1e-5, setting + " " + EP2);
        TrajectoryParity.assertIdentical(ep2, TrajectoryParity.run(base, EP2.with(Variant.of("recompute-moe",
                "--recompute-granularity", "selective", "--recompute-modules", "moe,moe_act"))), setting + " recompute");
    }

    /**
     * MoE layers on both pipeline stages (the mixtral fixture's two layers, one per stage): the
     * first stage's balancing losses are extra backward roots of its tape, scaled like the last
     * stage's main loss; expert gradients are averaged over the expert-data group of each stage.
     * PP=2, EP=2 x PP=2 (both dispatchers) and EP=2 x PP=2 with the distributed optimizer follow
     * the one-rank trajectory.
     */
    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"aux_loss/softmax", "seq_aux_loss/sigmoid"})
    void expertParallelPipelineStagesFollowTheOneRankTrajectory(String setting) {
        String[] s = setting.split("/");
        List<String> base = base(s[0], s[1]);
        List<StepResult> reference = TrajectoryParity.run(base, SINGLE);
        Variant allgather = Variant.of("ep2-allgather-pp2", "--nproc-per-node", "4", "--pipeline-model-parallel-size",
                "2", "--expert-model-parallel-size", "2", "--moe-token-dispatcher-type", "allgather");
        for (Variant v : List.of(TrajectoryParity.PP2, TrajectoryParity.EP2_PP2, allgather,
                TrajectoryParity.EP2_PP2.with(DISTOPT))) {
            TrajectoryParity.assertClose(reference, TrajectoryParity.run(base, v), 1e-5, setting + " " + v);
        }
    }

    /**
     * Expert x context parallelism (Megatron-Core's decoupled expert grid: the expert ranks tile
     * TP x CP x DP of the dense layout): each CP rank routes its chunks of the sequence, the
     * balancing losses count tokens per expert over the whole sequence (per sequence for
     * seq_aux_loss). With the aux loss: EP=2 x CP=2 (world 2, both dispatchers, p2p and all-to-all
     * attention) and EP=2 x CP=2 x DP=2 with the distributed optimizer (world 4); with the seq-aux
     * loss: EP=2 x CP=2. They follow the one-rank trajectory within 1e-5, z-loss on too.
     */
    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"aux_loss/softmax", "seq_aux_loss/sigmoid"})
    void expertAndContextParallelFollowTheOneRankTrajectory(String setting) {
        String[] s = setting.split("/");
        List<String> base = base(s[0], s[1]);
        List<StepResult> reference = TrajectoryParity.run(base, SINGLE);
        Variant ep = Variant.of("ep2", "--expert-model-parallel-size", "2", "--moe-token-dispatcher-type", "alltoall");
        Variant allgather = Variant.of("ep2-allgather", "--expert-model-parallel-size", "2",
                "--moe-token-dispatcher-type", "allgather");
        List<Variant> layouts = s[0].equals("aux_loss")
                ? List.of(ep.with(TrajectoryParity.cp(2, "p2p")), allgather.with(TrajectoryParity.cp(2, "a2a")),
                        ep.with(TrajectoryParity.cp(2, "p2p", "--use-distributed-optimizer")))
                : List.of(ep.with(TrajectoryParity.cp(2, "p2p")));
        for (Variant v : layouts) {
            TrajectoryParity.assertClose(reference, TrajectoryParity.run(base, v), 1e-5, setting + " " + v);
        }
    }

    /**
     * Capacity at EP=2: with a factor so large that nothing is dropped (capacity 2T, an expert gets
     * at most T pairs), capped and padded dispatch follow the dropless trajectory (padding within
     * 1e-6: the zero rows change the GEMM shapes); a small factor drops pairs and changes it.
     */
    @Test
    void paddedAndDroplessAgreeWhenNothingIsDropped() {
        List<String> base = base("aux_loss", "softmax");
        List<StepResult> dropless = TrajectoryParity.run(base, EP2);
        Variant capped = Variant.of("capacity-4", "--moe-expert-capacity-factor", "4");
        TrajectoryParity.assertIdentical(dropless, TrajectoryParity.run(base, EP2.with(capped)), "capped, nothing dropped");
        TrajectoryParity.assertClose(dropless, TrajectoryParity.run(base, EP2.with(capped).with(Variant.of("padded",
                "--moe-pad-expert-input-to-capacity"))), 1e-6, "padded, nothing dropped");
        for (String policy : new String[] {"probs", "position"}) {
            List<StepResult> dropping = TrajectoryParity.run(base, EP2.with(Variant.of("capacity-0.5-" + policy,
                    "--moe-expert-capacity-factor", "0.5", "--moe-token-drop-policy", policy)));
            assertThat(Math.abs(dropping.get(0).gradNorm() - dropless.get(0).gradNorm()))
                    .as("dropping with %s changes the gradient", policy).isGreaterThan(1e-6);
        }
    }

    /**
     * {@code --moe-grouped-gemm} (batched GEMMs over zero-padded rows) follows the per-expert loop
     * within 1e-5 on one rank (4 local experts) and at EP=2 (2 each), with the activation recomputed.
     */
    @Test
    void groupedGemmFollowsThePerExpertLoop() {
        List<String> base = base("aux_loss", "softmax");
        Variant grouped = Variant.of("grouped-gemm", "--moe-grouped-gemm");
        TrajectoryParity.assertClose(TrajectoryParity.run(base, SINGLE), TrajectoryParity.run(base, grouped), 1e-5,
                "grouped, one rank");
        TrajectoryParity.assertClose(TrajectoryParity.run(base, EP2), TrajectoryParity.run(base, EP2.with(grouped)
                .with(Variant.of("recompute-moe-act", "--recompute-granularity", "selective", "--recompute-modules",
                        "moe_act"))), 1e-5, "grouped, EP=2");
    }

    /**
     * Gated shared experts (random weights, mock data, both balancing losses): EP=2 with the
     * distributed optimizer and EP=2 x TP=2 + SP (the gate's gradient is a TP partial sum, like the
     * router's) follow the one-rank trajectory within 1e-5.
     */
    @Test
    void sharedExpertsFollowTheOneRankTrajectory() {
        List<String> base = sharedExpertArgs();
        List<StepResult> reference = TrajectoryParity.run(base, SINGLE);
        for (Variant v : List.of(EP2.with(DISTOPT), EP2_TP2_SP)) {
            TrajectoryParity.assertClose(reference, TrajectoryParity.run(base, v), 1e-5, "shared experts " + v);
        }
    }

    /**
     * {@code --moe-shared-expert-overlap} moves the dispatch's exchange to a communication thread
     * while the shared experts compute: the same arithmetic, so the EP=2 trajectory is bit-identical
     * with it, also with the MoE block recomputed (the replay overlaps again). Refused, as in
     * Megatron, with the allgather dispatcher, and on a model without shared experts.
     */
    @Test
    void sharedExpertOverlapChangesNothing() {
        List<String> base = sharedExpertArgs();
        Variant overlap = Variant.of("overlap", "--moe-shared-expert-overlap");
        Variant recompute = Variant.of("recompute-moe", "--recompute-granularity", "selective", "--recompute-modules",
                "moe");
        TrajectoryParity.assertIdentical(TrajectoryParity.run(base, EP2), TrajectoryParity.run(base, EP2.with(overlap)),
                "overlap, EP=2");
        TrajectoryParity.assertIdentical(TrajectoryParity.run(base, EP2.with(recompute)),
                TrajectoryParity.run(base, EP2.with(recompute).with(overlap)), "overlap, EP=2, MoE recomputed");

        assertThatThrownBy(() -> TrajectoryParity.run(base, EP2_ALLGATHER.with(overlap)))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("--moe-shared-expert-overlap needs --moe-token-dispatcher-type alltoall")
                .hasMessageContaining("got allgather");
        List<String> noShared = new java.util.ArrayList<>(base);
        int at = noShared.indexOf("--moe-shared-expert-intermediate-size");
        noShared.subList(at, at + 3).clear(); // the size and --moe-shared-expert-gate
        assertThatThrownBy(() -> TrajectoryParity.run(noShared, EP2.with(overlap)))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("--moe-shared-expert-overlap needs shared experts");
    }

    private static List<String> sharedExpertArgs() {
        return TrajectoryParity.args("--mock-data", "--num-layers", "2", "--hidden-size", "32",
                "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128", "--swiglu",
                "--normalization", "RMSNorm", "--position-embedding-type", "rope", "--disable-bias-linear",
                "--num-experts", "4", "--moe-router-topk", "2", "--moe-ffn-hidden-size", "16",
                "--moe-shared-expert-intermediate-size", "24", "--moe-shared-expert-gate",
                "--moe-aux-loss-coeff", "0.01", "--moe-z-loss-coeff", "0.001", "--train-iters", "4",
                "--micro-batch-size", "1", "--global-batch-size", "4", "--lr", "3e-3", "--lr-decay-style", "constant",
                "--seed", "11");
    }

    /**
     * MoE with virtual pipeline stages: 4 MoE layers (random weights) on PP=2 x VP=2, each model
     * chunk one layer; every chunk's balancing losses are extra backward roots of its own tape,
     * scaled like the main loss (a chunk before the last through {@code Tape.backward(output,
     * grad, lossScale)}). PP=2 x VP=2 and EP=2 x PP=2 x VP=2 (world 4) follow the one-rank
     * trajectory within 1e-5, in training and in evaluation.
     */
    @Test
    void expertLayersOnVirtualPipelineStagesFollowTheOneRankTrajectory() {
        List<String> base = TrajectoryParity.args("--mock-data", "--num-layers", "4", "--hidden-size", "32",
                "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128", "--num-experts", "4",
                "--moe-router-topk", "2", "--moe-ffn-hidden-size", "32", "--micro-batch-size", "1",
                "--global-batch-size", "4", "--train-iters", "4", "--lr", "3e-3", "--lr-decay-style", "constant",
                "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", "5", "--moe-router-load-balancing-type",
                "aux_loss", "--moe-aux-loss-coeff", "0.01", "--moe-z-loss-coeff", "0.001",
                "--eval-interval", "4", "--eval-iters", "1");
        List<StepResult> reference = TrajectoryParity.run(base, SINGLE);
        double referenceEval = PipelineParityTest.validationLoss(base, SINGLE, 4);
        Variant ep2 = Variant.of("ep2-pp2-vp2", "--nproc-per-node", "4", "--pipeline-model-parallel-size", "2",
                "--virtual-pipeline-model-parallel-size", "2", "--expert-model-parallel-size", "2");
        for (Variant v : List.of(TrajectoryParity.PP2_VP2, ep2)) {
            TrajectoryParity.assertClose(reference, TrajectoryParity.run(base, v), 1e-5, v.name());
            assertThat(PipelineParityTest.validationLoss(base, v, 4)).as(v.name() + " evaluation")
                    .isCloseTo(referenceEval, org.assertj.core.api.Assertions.within(1e-5 * Math.max(1, referenceEval)));
        }
    }
}
