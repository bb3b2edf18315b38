package org.djlmegatron.nn;

import static org.djlmegatron.ParityHarness.assertParity;

import org.djlmegatron.ParityHarness.BlockCase;
import org.djlmegatron.ParityHarness.Sharding;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Column- and row-parallel linear layers at TP=2 and TP=4 against TP=1, forward and backward. */
class LinearParityTest {

    private static final long[] INPUT = {2, 8, 32};

    @ParameterizedTest(name = "bias={0} gatherOutput={1}")
    @CsvSource({"true, false", "false, false", "true, true", "false, true"})
    void columnParallelLinear(boolean bias, boolean gatherOutput) {
        BlockCase c = BlockCase.replicated(ctx -> ColumnParallelLinear.builder(ctx)
                .setInFeatures(32).setOutFeatures(48).optBias(bias).optGatherOutput(gatherOutput)
                .build(), INPUT);
        assertParity(gatherOutput ? c : c.withOutput(Sharding.split(-1)), 2, 4);
    }

    /** The fused [gate; up] layout: rank r's output is [gate_r; up_r]. */
    @ParameterizedTest(name = "bias={0}")
    @CsvSource({"true", "false"})
    void gatedColumnParallelLinear(boolean bias) {
        BlockCase c = BlockCase.replicated(ctx -> ColumnParallelLinear.builder(ctx)
                .setInFeatures(32).setOutFeatures(64).optGated(true).optBias(bias).build(), INPUT);
        assertParity(c.withOutput(Sharding.GATED_LAST_AXIS), 2, 4);
    }

    /** With the output gathered, the full [gate; up] output must come back in TP=1 order. */
    @ParameterizedTest(name = "bias={0}")
    @CsvSource({"true", "false"})
    void gatedColumnParallelLinearGathered(boolean bias) {
        assertParity(BlockCase.replicated(ctx -> ColumnParallelLinear.builder(ctx)
                .setInFeatures(32).setOutFeatures(64).optGated(true).optBias(bias)
                .optGatherOutput(true).build(), INPUT), 2, 4);
    }

    @ParameterizedTest(name = "inputIsParallel={0} bias={1}")
    @CsvSource({"true, true", "true, false", "false, true", "false, false"})
    void rowParallelLinear(boolean inputIsParallel, boolean bias) {
        BlockCase c = BlockCase.replicated(ctx -> RowParallelLinear.builder(ctx)
                .setInFeatures(32).setOutFeatures(24).optBias(bias)
                .optInputIsParallel(inputIsParallel).build(), INPUT);
        assertParity(inputIsParallel ? c.withInput(Sharding.split(-1)) : c, 2, 4);
    }
}
