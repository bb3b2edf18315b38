package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Two JVMs with two thread ranks each, joined on loopback, train exactly like one JVM with four. */
class MultiJvmPretrainTest {

    @TempDir
    Path tmp;

    private static final List<String> ARGS = List.of("--mock-data", "--num-layers", "2", "--hidden-size", "32",
            "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128", "--micro-batch-size", "1",
            "--global-batch-size", "4", "--lr", "3e-3", "--train-iters", "6", "--tensor-model-parallel-size", "2",
            "--use-distributed-optimizer", "--seed", "5");

    @Test
    void twoJvmsTimesTwoRanksEqualOneJvmWithFour() throws Exception {
        List<String> one = new ArrayList<>(ARGS);
        one.addAll(List.of("--nproc-per-node", "4"));
        List<StepResult> reference = PretrainRunner.run(one.toArray(new String[0]));

        Path metrics = tmp.resolve("node0.jsonl");
        List<String> node = new ArrayList<>(ARGS);
        node.addAll(List.of("--nproc-per-node", "2"));
        ForkedCli.runTwoNodes(tmp, node, metrics);
        List<double[]> got = ForkedCli.metrics(metrics);
        assertThat(got).hasSize(reference.size());
        for (double[] m : got) {
            StepResult r = reference.get((int) m[0] - 1);
            assertThat(m[1]).as("loss at iteration %d", (int) m[0]).isEqualTo(r.loss());
            assertThat(m[2]).as("grad norm at iteration %d", (int) m[0]).isEqualTo(r.gradNorm());
        }
    }
}
