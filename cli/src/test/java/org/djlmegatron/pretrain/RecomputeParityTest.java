package org.djlmegatron.pretrain;

import static org.djlmegatron.pretrain.TrajectoryParity.DP2_DISTOPT;
import static org.djlmegatron.pretrain.TrajectoryParity.SINGLE;
import static org.djlmegatron.pretrain.TrajectoryParity.TP2_SP;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.djlmegatron.pretrain.TrajectoryParity.Variant;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Activation recomputation changes when activations are computed, never their values: every
 * {@code --recompute-*} mode gives the bit-identical fp32 trajectory of no recomputation, for the
 * llama and mixtral fixtures, on one rank, at TP=2 + SP and at DP=2 with the distributed optimizer
 * (10 iterations of mock data from the fixture's weights).
 */
class RecomputeParityTest {

    static final List<Variant> MODES = List.of(
            Variant.of("selective-core_attn", "--recompute-activations"),
            Variant.of("selective-all", "--recompute-granularity", "selective", "--recompute-modules",
                    "core_attn", "mlp", "layernorm", "moe_act"),
            Variant.of("selective-moe", "--recompute-granularity", "selective", "--recompute-modules", "moe,layernorm"),
            Variant.of("full-uniform-1", "--recompute-granularity", "full", "--recompute-method", "uniform",
                    "--recompute-num-layers", "1"),
            Variant.of("full-uniform-2", "--recompute-granularity", "full", "--recompute-method", "uniform",
                    "--recompute-num-layers", "2"),
            Variant.of("full-block-1", "--recompute-granularity", "full", "--recompute-method", "block",
                    "--recompute-num-layers", "1"));

    static Stream<Arguments> cases() {
        List<Arguments> out = new ArrayList<>();
        for (String model : new String[] {"llama", "mixtral"}) {
            for (Variant layout : new Variant[] {SINGLE, TP2_SP, DP2_DISTOPT}) {
                out.add(Arguments.of(model, layout));
            }
        }
        return out.stream();
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("cases")
    void everyModeGivesTheSameTrajectoryBitForBit(String model, Variant layout) {
        Path dir = PretrainRunner.fixtures().resolve("hf").resolve(model);
        List<String> base = TrajectoryParity.args("--init-hf", dir.toString(), "--mock-data", "--seq-length", "24",
                "--train-iters", "10", "--micro-batch-size", "2", "--global-batch-size", "4", "--lr", "1e-3",
                "--lr-decay-style", "constant", "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", "7");
        List<StepResult> reference = TrajectoryParity.run(base, layout);
        for (Variant mode : MODES) {
            if (model.equals("llama") && mode.name().contains("moe")) {
                continue; // a dense model has no MoE modules
            }
            TrajectoryParity.assertIdentical(reference, TrajectoryParity.run(base, layout.with(mode)),
                    model + " " + layout.with(mode));
        }
    }
}
