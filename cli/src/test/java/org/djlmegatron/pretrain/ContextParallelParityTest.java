package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;
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
    private static Path packed;
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
        // packed documents: about one token in 8 is the llama2 tokenizer's EOD (</s>, id 2), so each
        // 64-token sample holds several documents, some of them crossing the CP chunk boundaries
        long[] docs = new long[tokens.length];
        for (int i = 0; i < docs.length; i++) {
            docs[i] = random.nextInt(8) == 0 ? EOD : tokens[i];
        }
        packed = tmp.resolve("packed.safetensors");
        try (NDManager m = NDManager.newBaseManager()) {
            SafetensorsWriter.write(batches, Map.of("train_batches", m.create(tokens, new Shape(10, 4, 65))), Map.of());
            SafetensorsWriter.write(packed, Map.of("train_batches", m.create(docs, new Shape(10, 4, 65))), Map.of());
        }
    }

    static final long EOD = 2;

    /**
     * Megatron's document masking ({@code --reset-position-ids --reset-attention-mask --eod-mask-loss},
     * EOD from the llama2 tokenizer) on packed samples: every comm type applies the document mask.
     */
    static Stream<Arguments> documentLayouts() {
        List<Arguments> out = new ArrayList<>();
        for (String comm : new String[] {"p2p", "all_gather", "a2a"}) {
            out.add(Arguments.of("llama", cp(2, comm)));
        }
        out.add(Arguments.of("llama", cp(2, "p2p", "--tensor-model-parallel-size", "2", "--sequence-parallel")));
        out.add(Arguments.of("llama", cp(2, "a2a", "--recompute-activations")));
        out.add(Arguments.of("gpt2", cp(2, "all_gather")));
        out.add(Arguments.of("llama", TrajectoryParity.PP2)); // every stage derives the layout from the ids
        out.add(Arguments.of("llama", TrajectoryParity.cpPp2(2, "a2a"))); // and each stage's attention its chunks' mask
        return out.stream();
    }

    static List<String> documentBase(String model) {
        List<String> args = TrajectoryParity.replace(base(model), "--replay-batches", packed.toString());
        args.addAll(List.of("--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model",
                PretrainRunner.fixtures().resolve("tokenizers").resolve("llama2").toString(),
                "--reset-position-ids", "--reset-attention-mask", "--eod-mask-loss"));
        return args;
    }

    @ParameterizedTest(name = "{0} {1} documents")
    @MethodSource("documentLayouts")
    void documentMaskingFollowsTheOneRankTrajectory(String model, Variant layout) {
        List<StepResult> reference = REFERENCES.computeIfAbsent(model + " documents",
                m -> TrajectoryParity.run(documentBase(model), SINGLE));
        List<StepResult> plain = REFERENCES.computeIfAbsent(model + " packed", m -> TrajectoryParity.run(
                TrajectoryParity.replace(TrajectoryParity.replace(base(model), "--replay-batches", packed.toString()),
                        "--train-iters", "1"), SINGLE));
        // the flags change the arithmetic (else this check could not fail)
        assertThat(Math.abs(reference.get(0).loss() - plain.get(0).loss())).isGreaterThan(1e-3);
        TrajectoryParity.assertClose(reference, TrajectoryParity.run(documentBase(model), layout), 1e-5,
                model + " " + layout + " documents");
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

    /**
     * Dropout (hidden and attention 0.1) under CP: the position-keyed masks are drawn by global
     * sequence index (and by global (query, key) inside ring attention and Ulysses), so the CP
     * trajectory is the one-rank one with the same masks.
     */
    static Stream<Arguments> dropoutLayouts() {
        List<Arguments> out = new ArrayList<>();
        for (String comm : new String[] {"p2p", "all_gather", "a2a"}) {
            out.add(Arguments.of("llama", cp(2, comm)));
        }
        out.add(Arguments.of("llama", cp(4, "p2p")));
        out.add(Arguments.of("llama", cp(2, "a2a", "--tensor-model-parallel-size", "2", "--sequence-parallel")));
        out.add(Arguments.of("llama", cp(2, "p2p", "--recompute-activations")));
        out.add(Arguments.of("gpt2", cp(2, "p2p")));
        return out.stream();
    }

    static List<String> dropoutBase(String model) {
        return TrajectoryParity.replace(TrajectoryParity.replace(base(model), "--hidden-dropout", "0.1"),
                "--attention-dropout", "0.1");
    }

    @ParameterizedTest(name = "{0} {1} dropout")
    @MethodSource("dropoutLayouts")
    void dropoutFollowsTheOneRankTrajectory(String model, Variant layout) {
        List<StepResult> reference = REFERENCES.computeIfAbsent(model + " dropout",
                m -> TrajectoryParity.run(dropoutBase(model), SINGLE));
        List<StepResult> plain = REFERENCES.computeIfAbsent(model, m -> TrajectoryParity.run(base(m), SINGLE));
        assertThat(deviation(reference, plain)).as("dropout changes the trajectory").isGreaterThan(1e-3);
        TrajectoryParity.assertClose(reference, TrajectoryParity.run(dropoutBase(model), layout), 1e-5,
                model + " " + layout + " dropout");
    }

    /** The largest loss difference or relative gradient-norm difference over the steps. */
    private static double deviation(List<StepResult> a, List<StepResult> b) {
        double max = 0;
        for (int i = 0; i < a.size(); i++) {
            max = Math.max(max, Math.abs(a.get(i).loss() - b.get(i).loss()));
            max = Math.max(max, Math.abs(a.get(i).gradNorm() - b.get(i).gradNorm()) / b.get(i).gradNorm());
        }
        return max;
    }
}
