package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;

import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
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

        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        Path metrics = tmp.resolve("node0.jsonl");
        List<Process> nodes = new ArrayList<>();
        for (int node = 0; node < 2; node++) {
            List<String> cli = new ArrayList<>(List.of("pretrain-gpt"));
            cli.addAll(ARGS);
            cli.addAll(List.of("--nproc-per-node", "2"));
            if (node == 0) {
                cli.addAll(List.of("--metrics-out", metrics.toString()));
            }
            Map<String, String> env = Map.of("MASTER_ADDR", "127.0.0.1", "MASTER_PORT", Integer.toString(port),
                    "NNODES", "2", "NODE_RANK", Integer.toString(node), "DJLM_TIMEOUT_SECONDS", "60");
            nodes.add(ForkedCli.start(List.of(), env, tmp.resolve("node" + node + ".log"), cli.toArray(new String[0])));
        }
        for (int node = 0; node < 2; node++) {
            Process p = nodes.get(node);
            Path log = tmp.resolve("node" + node + ".log");
            if (!p.waitFor(240, TimeUnit.SECONDS)) {
                nodes.forEach(Process::destroyForcibly);
                throw new AssertionError("node " + node + " timed out:\n" + Files.readString(log));
            }
            assertThat(p.exitValue()).as("node %d exit, output:%n%s", node, Files.readString(log)).isZero();
        }
        List<double[]> got = ForkedCli.metrics(metrics);
        assertThat(got).hasSize(reference.size());
        for (double[] m : got) {
            StepResult r = reference.get((int) m[0] - 1);
            assertThat(m[1]).as("loss at iteration %d", (int) m[0]).isEqualTo(r.loss());
            assertThat(m[2]).as("grad norm at iteration %d", (int) m[0]).isEqualTo(r.gradNorm());
        }
    }
}
