package org.djlmegatron.nn;

import static org.assertj.core.api.Assertions.assertThat;
import static org.djlmegatron.ParityHarness.TOLERANCE;
import static org.djlmegatron.ParityHarness.assertParity;
import static org.djlmegatron.ParityHarness.fullParameter;
import static org.djlmegatron.ParityHarness.installParameters;
import static org.djlmegatron.ParityHarness.maxAbsDiff;
import static org.djlmegatron.ParityHarness.onRanks;

import ai.djl.ndarray.NDArray;
import org.djlmegatron.ParityHarness.BlockCase;
import org.djlmegatron.ParityHarness.Sharding;
import org.djlmegatron.ParityHarness.Tensor;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * RMSNorm and LayerNorm: replicated at TP=2/4, and under sequence parallelism (each rank normalises
 * its slice of the sequence; the weight gradients are partial and summed over the group); plus the
 * TP=1 values against the textbook formulas.
 */
class NormParityTest {

    private static final int HIDDEN = 32;
    private static final double EPS = 1e-5;
    private static final long[] INPUT = {2, 8, HIDDEN};

    @ParameterizedTest
    @EnumSource(Norm.Kind.class)
    void replicatedMatchesSingleRank(Norm.Kind kind) {
        assertParity(BlockCase.replicated(ctx -> new Norm(ctx, kind, HIDDEN, EPS, false), INPUT), 2, 4);
    }

    @ParameterizedTest
    @EnumSource(Norm.Kind.class)
    void sequenceParallelMatchesSingleRank(Norm.Kind kind) {
        assertParity(BlockCase.replicated(ctx -> new Norm(ctx, kind, HIDDEN, EPS, true), INPUT)
                .withInput(Sharding.split(1)).withOutput(Sharding.split(1)), 2, 4);
    }

    @ParameterizedTest
    @EnumSource(Norm.Kind.class)
    void matchesFormula(Norm.Kind kind) {
        Tensor x = Tensor.random(7, 2.0, INPUT);
        float[][] wb = new float[2][];
        float[] y = onRanks(1, ctx -> {
            Norm norm = new Norm(ctx, kind, HIDDEN, EPS, false);
            installParameters(norm);
            wb[0] = fullParameter(norm.parameters().get(0)).data();
            wb[1] = kind == Norm.Kind.LAYER_NORM ? fullParameter(norm.parameters().get(1)).data() : null;
            NDArray out = norm.apply(x.toNd(ctx.manager()));
            return out.toFloatArray();
        }).get(0);

        float[] expected = new float[x.data().length];
        for (int row = 0; row < x.data().length / HIDDEN; row++) {
            int o = row * HIDDEN;
            double mean = 0;
            double sq = 0;
            for (int i = 0; i < HIDDEN; i++) {
                mean += x.data()[o + i];
                sq += (double) x.data()[o + i] * x.data()[o + i];
            }
            mean /= HIDDEN;
            double var = sq / HIDDEN - mean * mean;
            for (int i = 0; i < HIDDEN; i++) {
                double v = x.data()[o + i];
                expected[o + i] = (float) (kind == Norm.Kind.RMS_NORM
                        ? v / Math.sqrt(sq / HIDDEN + EPS) * wb[0][i]
                        : (v - mean) / Math.sqrt(var + EPS) * wb[0][i] + wb[1][i]);
            }
        }
        assertThat(maxAbsDiff(y, expected)).isLessThanOrEqualTo(TOLERANCE);
    }
}
