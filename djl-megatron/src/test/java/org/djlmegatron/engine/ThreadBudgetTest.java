package org.djlmegatron.engine;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.engine.Engine;
import ai.djl.pytorch.jni.JniUtils;
import java.util.List;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.parallel.RankGrid;
import org.junit.jupiter.api.Test;

/** The intra-op thread rule (flag, else OMP_NUM_THREADS, else cores / local ranks) and that rank threads get it. */
class ThreadBudgetTest {

    @Test
    void coresAreSharedBetweenTheLocalRanksUnlessOverridden() {
        assertThat(ThreadBudget.resolve(null, null, 16, 4)).isEqualTo(4);
        assertThat(ThreadBudget.resolve(null, null, 16, 3)).isEqualTo(5);
        assertThat(ThreadBudget.resolve(null, null, 2, 2)).isEqualTo(1);
        assertThat(ThreadBudget.resolve(null, null, 2, 8)).isEqualTo(1);
        assertThat(ThreadBudget.resolve(null, "3", 16, 4)).isEqualTo(3);
        assertThat(ThreadBudget.resolve(6, "3", 16, 4)).isEqualTo(6);
        assertThatThrownBy(() -> ThreadBudget.resolve(null, "lots", 16, 4))
                .hasMessage("OMP_NUM_THREADS: expected a positive integer, found 'lots'");
        assertThatThrownBy(() -> ThreadBudget.resolve(0, null, 16, 4))
                .hasMessage("--intra-op-threads: expected a positive integer, found 0");
    }

    @Test
    void rankThreadsStartedAfterApplyUseTheBudget() {
        Engine.getEngine("PyTorch");
        int before = JniUtils.getNumThreads();
        try {
            for (int n : new int[] {1, 3}) {
                ThreadBudget.apply(n);
                List<Integer> seen = LocalWorld.run(RankGrid.create(2, 1, 1, 1, 1), ctx -> JniUtils.getNumThreads());
                assertThat(seen).containsExactly(n, n);
            }
        } finally {
            ThreadBudget.apply(before);
        }
    }
}
