package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Pipeline stages in different JVMs (one rank each, joined on loopback): activations, their
 * gradients and the tied embedding's gradient cross the TCP backend; the run equals one JVM's bit
 * for bit, with 1F1B and with interleaved virtual stages. A stage whose process dies makes the
 * other exit within the collective timeout, naming the group, the rank and the operation.
 */
class PipelineMultiJvmTest {

    @TempDir
    Path tmp;

    private static final List<String> ARGS = List.of("--mock-data", "--num-layers", "4", "--hidden-size", "32",
            "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128", "--micro-batch-size", "1",
            "--global-batch-size", "4", "--lr", "3e-3", "--pipeline-model-parallel-size", "2", "--seed", "5",
            "--log-interval", "1", "--intra-op-threads", "1"); // one JVM or two: the same kernels

    /** Both nodes of {@code args}, one pipeline stage each. */
    private List<Process> startTwoNodes(List<String> args, String timeoutSeconds, Path metrics) throws Exception {
        List<String> oneRankEach = new ArrayList<>(args);
        oneRankEach.addAll(List.of("--nproc-per-node", "1"));
        return ForkedCli.startTwoNodes(tmp, oneRankEach, metrics, timeoutSeconds);
    }

    private Path log(int node) {
        return tmp.resolve("node" + node + ".log");
    }

    @Test
    void twoJvmsWithOneStageEachEqualOneJvm() throws Exception {
        for (List<String> layout : List.of(List.<String>of(), List.of("--virtual-pipeline-model-parallel-size", "2"))) {
            List<String> args = new ArrayList<>(ARGS);
            args.addAll(layout);
            args.addAll(List.of("--train-iters", "4"));
            List<String> one = new ArrayList<>(args);
            one.addAll(List.of("--nproc-per-node", "2"));
            List<StepResult> reference = TrajectoryParity.run(one, TrajectoryParity.Variant.of("one-jvm"));
            Path metrics = tmp.resolve("metrics" + layout.size() + ".jsonl");
            List<Process> nodes = startTwoNodes(args, "60", metrics);
            for (int node = 0; node < 2; node++) {
                Process p = nodes.get(node);
                if (!p.waitFor(240, TimeUnit.SECONDS)) {
                    nodes.forEach(Process::destroyForcibly);
                    throw new AssertionError("node " + node + " timed out:\n" + Files.readString(log(node)));
                }
                assertThat(p.exitValue()).as("node %d exit, output:%n%s", node, Files.readString(log(node))).isZero();
            }
            List<double[]> got = ForkedCli.metrics(metrics);
            assertThat(got).hasSize(reference.size());
            for (double[] m : got) {
                StepResult r = reference.get((int) m[0] - 1);
                assertThat(m[1]).as("%s loss at iteration %d", layout, (int) m[0]).isEqualTo(r.loss());
                assertThat(m[2]).as("%s grad norm at iteration %d", layout, (int) m[0]).isEqualTo(r.gradNorm());
            }
        }
    }

    @Test
    void aStageWhoseProcessDiesMakesTheOtherExitNamingGroupRankAndOperation() throws Exception {
        List<String> args = new ArrayList<>(ARGS);
        args.addAll(List.of("--train-iters", "100000"));
        Path metrics = tmp.resolve("metrics.jsonl");
        List<Process> nodes = startTwoNodes(args, "20", metrics);
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(240);
            while (!Files.exists(metrics) || Files.readAllLines(metrics).size() < 2) { // flushed per iteration
                if (System.nanoTime() > deadline || !nodes.get(0).isAlive()) {
                    throw new AssertionError("node 0 did not reach iteration 2:\n" + Files.readString(log(0)));
                }
                Thread.sleep(200);
            }
            nodes.get(1).destroyForcibly().waitFor(30, TimeUnit.SECONDS);
            // the survivor's link reports the loss at once; the collective timeout (20 s) bounds it otherwise
            assertThat(nodes.get(0).waitFor(120, TimeUnit.SECONDS)).as("node 0 exits").isTrue();
            String out = Files.readString(log(0), StandardCharsets.UTF_8);
            assertThat(nodes.get(0).exitValue()).as(out).isNotZero();
            assertThat(out).contains("lost connection to node 1")
                    .containsPattern("rank 0 here was in group pp\\S* ?\\S*: rank 0 \\(global 0\\) \\w+");
        } finally {
            nodes.forEach(Process::destroyForcibly);
        }
    }
}
