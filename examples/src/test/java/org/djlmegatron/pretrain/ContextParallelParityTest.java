package org.djlmegatron.pretrain;

import static org.djlmegatron.pretrain.TrajectoryParity.SINGLE;

import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.djlmegatron.pretrain.TrajectoryParity.Variant;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Context parallelism changes where attention's work happens, not the arithmetic: from the llama
 * fixture's weights, 10 fp32 iterations on 64-token sequences at CP=2 and CP=4 with each
 * {@code --cp-comm-type}, and CP=2 x TP=2 + SP and CP=2 x DP=2, follow the one-rank trajectory
 * within 1e-5 (loss absolute, gradient norm relative).
 */
class ContextParallelParityTest {

    private static List<String> base;
    private static List<StepResult> reference;

    static Stream<Variant> layouts() {
        Stream.Builder<Variant> out = Stream.builder();
        for (String comm : new String[] {"p2p", "all_gather", "a2a"}) {
            for (int cp : new int[] {2, 4}) {
                out.add(Variant.of("cp" + cp + "-" + comm, "--nproc-per-node", String.valueOf(cp),
                        "--context-parallel-size", String.valueOf(cp), "--cp-comm-type", comm));
            }
        }
        out.add(Variant.of("cp2-p2p-tp2-sp", "--nproc-per-node", "4", "--context-parallel-size", "2",
                "--tensor-model-parallel-size", "2", "--sequence-parallel"));
        out.add(Variant.of("cp2-a2a-tp2-sp", "--nproc-per-node", "4", "--context-parallel-size", "2",
                "--cp-comm-type", "a2a", "--tensor-model-parallel-size", "2", "--sequence-parallel"));
        out.add(Variant.of("cp2-p2p-dp2-distopt", "--nproc-per-node", "4", "--context-parallel-size", "2",
                "--use-distributed-optimizer"));
        out.add(Variant.of("cp2-all_gather-recompute", "--nproc-per-node", "2", "--context-parallel-size", "2",
                "--cp-comm-type", "all_gather", "--recompute-granularity", "full", "--recompute-method", "uniform",
                "--recompute-num-layers", "1"));
        return out.build();
    }

    @BeforeAll
    static void referenceRun() {
        Path dir = PretrainRunner.fixtures().resolve("hf").resolve("llama");
        base = TrajectoryParity.args("--init-hf", dir.toString(), "--mock-data", "--seq-length", "64",
                "--train-iters", "10", "--micro-batch-size", "2", "--global-batch-size", "4", "--lr", "1e-3",
                "--lr-decay-style", "constant", "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", "7");
        reference = TrajectoryParity.run(base, SINGLE);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("layouts")
    void followsTheOneRankTrajectory(Variant layout) {
        TrajectoryParity.assertClose(reference, TrajectoryParity.run(base, layout), 1e-5, "llama " + layout);
    }
}
