package org.djlmegatron.pretrain;

import static org.djlmegatron.pretrain.TrajectoryParity.SINGLE;
import static org.djlmegatron.pretrain.TrajectoryParity.cp;

import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.djlmegatron.io.SafetensorsWriter;
import org.djlmegatron.pretrain.TrajectoryParity.Variant;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Context parallelism changes where attention's work happens, not the arithmetic: from an HF
 * fixture's weights, 10 fp32 iterations on replayed batches of 64-token sequences at CP=2 and CP=4
 * with each {@code --cp-comm-type}, CP=2 x TP=2 + SP, CP=2 x DP=2 with the distributed optimizer and
 * CP=2 with full recomputation follow the one-rank trajectory within 1e-5 (loss absolute, gradient
 * norm relative). llama covers rotary positions and grouped-query attention, gpt2 learned positions.
 */
class ContextParallelParityTest {

    @TempDir
    static Path tmp;
    private static Path batches;
    private static final Map<String, List<StepResult>> REFERENCES = new HashMap<>();

    /** 10 iterations x 4 sequences of 65 tokens (64 inputs + the last label), seeded. */
    @BeforeAll
    static void writeBatches() {
        batches = tmp.resolve("batches.safetensors");
        long[] tokens = new long[10 * 4 * 65];
        Random random = new Random(16);
        for (int i = 0; i < tokens.length; i++) {
            tokens[i] = random.nextInt(512); // both fixtures' vocabulary
        }
        try (NDManager m = NDManager.newBaseManager()) {
            SafetensorsWriter.write(batches, Map.of("train_batches", m.create(tokens, new Shape(10, 4, 65))), Map.of());
        }
    }

    static Stream<Arguments> layouts() {
        List<Arguments> out = new ArrayList<>();
        for (String comm : new String[] {"p2p", "all_gather", "a2a"}) {
            for (int n : new int[] {2, 4}) {
                out.add(Arguments.of("llama", cp(n, comm)));
            }
            out.add(Arguments.of("llama", cp(2, comm, "--tensor-model-parallel-size", "2", "--sequence-parallel")));
            out.add(Arguments.of("llama", cp(2, comm, "--use-distributed-optimizer")));
        }
        out.add(Arguments.of("llama", cp(2, "p2p", "--recompute-granularity", "full", "--recompute-method", "uniform",
                "--recompute-num-layers", "1")));
        out.add(Arguments.of("llama", cp(2, "all_gather", "--recompute-activations")));
        out.add(Arguments.of("gpt2", cp(2, "p2p")));
        out.add(Arguments.of("gpt2", cp(4, "a2a")));
        out.add(Arguments.of("gpt2", cp(2, "all_gather", "--tensor-model-parallel-size", "2", "--sequence-parallel")));
        return out.stream();
    }

    static List<String> base(String model) {
        Path dir = PretrainRunner.fixtures().resolve("hf").resolve(model);
        return TrajectoryParity.args("--init-hf", dir.toString(), "--replay-batches", batches.toString(),
                "--hidden-dropout", "0", "--attention-dropout", "0",
                "--train-iters", "10", "--micro-batch-size", "2", "--global-batch-size", "4", "--lr", "1e-3",
                "--lr-decay-style", "constant", "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", "7");
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("layouts")
    void followsTheOneRankTrajectory(String model, Variant layout) {
        List<StepResult> reference = REFERENCES.computeIfAbsent(model, m -> TrajectoryParity.run(base(m), SINGLE));
        TrajectoryParity.assertClose(reference, TrajectoryParity.run(base(model), layout), 1e-5, model + " " + layout);
    }
}
