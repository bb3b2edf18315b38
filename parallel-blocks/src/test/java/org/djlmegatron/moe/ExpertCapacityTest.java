package org.djlmegatron.moe;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/** Capacity and both drop policies against a routing worked out by hand. */
class ExpertCapacityTest {

    // 4 tokens, top-2 over 3 experts: token t's pairs are 2t and 2t+1
    static final long[] CHOSEN = {0, 1, 0, 2, 0, 1, 2, 0};
    static final float[] WEIGHTS = {0.6f, 0.4f, 0.3f, 0.7f, 0.9f, 0.1f, 0.2f, 0.8f};

    @Test
    void capacityIsMegatrons() {
        // ceil(4 * 2 / 3 * 1.0) = ceil(2.67) = 3; factor 0.5: ceil(1.33) = 2
        assertThat(ExpertCapacity.capacity(4, 2, 3, 1.0)).isEqualTo(3);
        assertThat(ExpertCapacity.capacity(4, 2, 3, 0.5)).isEqualTo(2);
    }

    @Test
    void positionKeepsTheEarliestTokens() {
        // expert 0 gets pairs 0 (t0), 2 (t1), 4 (t2), 7 (t3): capacity 2 keeps t0, t1; experts 1 and 2 fit
        boolean[] kept = ExpertCapacity.keep(CHOSEN, WEIGHTS, 3, 2, ExpertCapacity.DropPolicy.POSITION);
        assertThat(kept).containsExactly(true, true, true, true, false, true, true, false);
    }

    @Test
    void probsKeepsTheLargestWeights() {
        // expert 0's weights 0.6, 0.3, 0.9, 0.8: capacity 2 keeps 0.9 (pair 4) and 0.8 (pair 7)
        boolean[] kept = ExpertCapacity.keep(CHOSEN, WEIGHTS, 3, 2, ExpertCapacity.DropPolicy.PROBS);
        assertThat(kept).containsExactly(false, true, false, true, true, true, true, true);
    }

    @Test
    void enoughCapacityKeepsEverything() {
        boolean[] kept = ExpertCapacity.keep(CHOSEN, WEIGHTS, 3, 4, ExpertCapacity.DropPolicy.PROBS);
        assertThat(kept).containsOnly(true);
    }
}
