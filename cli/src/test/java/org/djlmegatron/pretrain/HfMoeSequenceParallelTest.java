package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.djlmegatron.io.SafetensorsReader;
import org.djlmegatron.io.SafetensorsWriter;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The MoE fixtures' HF trajectories at EP=2 x TP=2 + sequence parallelism (world 4), with and
 * without the distributed optimizer. The fixtures' 23 training positions do not split over TP=2
 * under SP, so each recorded row is right-padded with Megatron's pad id (-1): one more position
 * whose label is left out of the loss (numerator and token count). Causal attention keeps it from
 * the 23 real positions, the MoE is per token and the fixtures train without aux loss, so
 * transformers' golden losses and gradient norms still apply exactly. The padded run on one rank
 * first shows that the padding changes nothing (within 1e-6 of the unpadded run).
 */
class HfMoeSequenceParallelTest {

    @TempDir
    Path tmp;

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"mixtral", "qwen3_moe"})
    void paddedExpertTensorSequenceParallelRunsReproduceTransformersTrajectory(String model) {
        Path dir = PretrainRunner.fixtures().resolve("hf").resolve(model);
        Path golden = dir.resolve("golden.safetensors");
        Path padded = padRows(golden, tmp.resolve(model + "-padded.safetensors"));

        List<StepResult> unpadded = PretrainRunner.run(args(dir, golden, "--nproc-per-node", "1", "--micro-batch-size", "2"));
        List<StepResult> single = PretrainRunner.run(args(dir, padded, "--nproc-per-node", "1", "--micro-batch-size", "2"));
        TrajectoryParity.assertClose(unpadded, single, 1e-6, model + " padded vs unpadded, one rank");

        HfGoldenTrajectory hf = HfGoldenTrajectory.of(golden);
        hf.assertFollowed(single, 3, 1e-4, 1e-4, model + " padded, one rank");
        String[] ep2Tp2Sp = {"--nproc-per-node", "4", "--micro-batch-size", "1", "--expert-model-parallel-size", "2",
            "--tensor-model-parallel-size", "2", "--sequence-parallel", "--moe-token-dispatcher-type", "alltoall"};
        hf.assertFollowed(PretrainRunner.run(args(dir, padded, ep2Tp2Sp)), 3, 1e-4, 1e-4, model + " ep2-tp2-sp");
        List<String> distopt = new ArrayList<>(List.of(ep2Tp2Sp));
        distopt.add("--use-distributed-optimizer");
        hf.assertFollowed(PretrainRunner.run(args(dir, padded, distopt.toArray(new String[0]))), 3, 1e-4, 1e-4,
                model + " ep2-tp2-sp distopt");
    }

    /** The fixture's {@code train_batches [3, 2, 24]} with a pad token appended to every row: {@code [3, 2, 25]}. */
    private static Path padRows(Path golden, Path out) {
        long[] rows;
        long[] shape;
        try (SafetensorsReader g = SafetensorsReader.open(golden)) {
            rows = g.loadLongs("train_batches");
            shape = g.info("train_batches").shape();
        }
        int width = (int) shape[2];
        int count = rows.length / width;
        long[] paddedRows = new long[count * (width + 1)];
        for (int r = 0; r < count; r++) {
            System.arraycopy(rows, r * width, paddedRows, r * (width + 1), width);
            paddedRows[r * (width + 1) + width] = -1; // Megatron's _PAD_TOKEN_ID
        }
        try (NDManager m = NDManager.newBaseManager()) {
            SafetensorsWriter.write(out, Map.of("train_batches",
                    m.create(paddedRows, new Shape(shape[0], shape[1], width + 1))), Map.of());
        }
        return out;
    }

    private static String[] args(Path dir, Path batches, String... parallel) {
        List<String> a = new ArrayList<>(List.of("--init-hf", dir.toString(), "--replay-batches", batches.toString(),
                "--train-iters", "3", "--global-batch-size", "2", "--lr", "1e-3", "--lr-decay-style", "constant",
                "--lr-warmup-iters", "0", "--adam-beta1", "0.9", "--adam-beta2", "0.95", "--adam-eps", "1e-8",
                "--weight-decay", "0.1", "--clip-grad", "1.0"));
        a.addAll(List.of(parallel));
        return a.toArray(new String[0]);
    }

    /** transformers' losses within 1e-4 absolute, pre-clip gradient norms within 1e-4 relative. */
}
