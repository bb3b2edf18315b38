package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.io.TempDir;

/**
 * Overlapped reduction and parameter gather over TCP: two JVMs with one rank each (DP=2, the
 * distributed optimizer, {@code --overlap-grad-reduce --overlap-param-gather}, 500-element
 * buckets) train like one JVM with two thread ranks without overlap; the same under ZeRO-2
 * ({@code optim_grads}: each of the two micro-batches per rank reduced to the owners over TCP
 * during its backward) and ZeRO-3 ({@code optim_grads_params}: per-layer reduce-scatters and
 * gathers ahead over TCP from each JVM's communication thread). Native library (the buffers).
 */
@Tag("native")
class OverlapMultiJvmTest {

    @TempDir
    Path tmp;

    private static final List<String> ARGS = List.of("--mock-data", "--num-layers", "2", "--hidden-size", "32",
            "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128", "--micro-batch-size", "1",
            "--global-batch-size", "4", "--lr", "3e-3", "--train-iters", "6",
            "--ddp-bucket-size", "500", "--seed", "5");

    @ParameterizedTest(name = "--data-parallel-sharding-strategy {0}")
    @ValueSource(strings = {"optim", "optim_grads", "optim_grads_params"})
    void twoJvmsWithOverlapTrainLikeOneJvmWithout(String strategy) throws Exception {
        List<String> args = new ArrayList<>(ARGS);
        args.addAll(List.of("--data-parallel-sharding-strategy", strategy));
        List<String> one = new ArrayList<>(args);
        one.addAll(List.of("--nproc-per-node", "2"));
        List<StepResult> reference = PretrainRunner.run(one.toArray(new String[0]));

        Path metrics = tmp.resolve("node0.jsonl");
        List<String> node = new ArrayList<>(args);
        node.addAll(List.of("--nproc-per-node", "1", "--overlap-grad-reduce", "--overlap-param-gather"));
        ForkedCli.runTwoNodes(tmp, node, metrics);
        assertThat(Files.readString(tmp.resolve("node0.log"))).as("the overlap ran")
                .contains("overlapped communication on rank 0");
        List<double[]> got = ForkedCli.metrics(metrics);
        assertThat(got).hasSize(reference.size());
        for (double[] m : got) {
            StepResult r = reference.get((int) m[0] - 1);
            assertThat(m[1]).as("loss at iteration %d", (int) m[0]).isCloseTo(r.loss(), within(1e-6));
            assertThat(m[2]).as("grad norm at iteration %d", (int) m[0]).isCloseTo(r.gradNorm(), within(1e-6 * r.gradNorm()));
        }
    }
}
