package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.djl.DjlMetadata;
import org.djlmegatron.bridge.djl.FileChecksums;
import org.djlmegatron.checkpoint.UnsupportedOptimizerLayoutException;
import org.djlmegatron.io.SafetensorsReader;
import org.djlmegatron.io.SafetensorsWriter;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Optimizer-state files record their layout version ({@code djlm_optimizer_layout_version} in
 * the safetensors metadata). Files without one (version 1, written before the record) still
 * resume exactly at their own layout, and are refused at another pipeline layout (they do not say
 * where each parameter lies); an unknown version is refused, naming what was found, what this
 * build reads and {@code --no-load-optim}.
 */
class OptimizerLayoutVersionTest {

    @TempDir
    Path tmp;

    private static List<String> args(String... more) {
        List<String> a = TrajectoryParity.args("--mock-data", "--num-layers", "2", "--hidden-size", "32",
                "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128", "--micro-batch-size", "1",
                "--global-batch-size", "2", "--lr", "3e-3", "--lr-decay-style", "cosine", "--lr-decay-iters", "10",
                "--seed", "5");
        a.addAll(List.of(more));
        return a;
    }

    @Test
    void versionOneFilesStillLoadAndUnknownVersionsAreRefused() throws IOException {
        List<StepResult> straight = TrajectoryParity.run(args("--train-iters", "3"), TrajectoryParity.DP2_DISTOPT);
        Path ckpt = tmp.resolve("ckpt");
        TrajectoryParity.run(args("--train-iters", "2", "--save", ckpt.toString()), TrajectoryParity.DP2_DISTOPT);
        Path iter = ckpt.resolve("iter_0000002");
        try (SafetensorsReader r = SafetensorsReader.open(iter.resolve("mp_rank_00/optim_dp_001.safetensors"))) {
            assertThat(r.metadata()).containsEntry("djlm_optimizer_layout_version", "2");
        }

        rewriteOptimizerMetadata(iter, Map.of()); // as written before layouts were versioned
        List<StepResult> resumed = TrajectoryParity.run(args("--train-iters", "3", "--load", ckpt.toString()),
                TrajectoryParity.DP2_DISTOPT);
        TrajectoryParity.assertIdentical(straight.subList(2, 3), resumed, "version-1 files resumed");
        List<StepResult> single = TrajectoryParity.run(args("--train-iters", "3", "--load", ckpt.toString()),
                TrajectoryParity.SINGLE); // TP/DP resharding of version-1 files, as before
        TrajectoryParity.assertClose(straight.subList(2, 3), single, 1e-5, "version-1 files at DP=1");
        assertThatThrownBy(() -> TrajectoryParity.run(args("--train-iters", "3", "--load", ckpt.toString()),
                TrajectoryParity.PP2))
                .isInstanceOf(CheckpointException.class)
                .hasMessageContaining("layout version 1")
                .hasMessageContaining("--no-load-optim");

        rewriteOptimizerMetadata(iter, Map.of("djlm_optimizer_layout_version", "99"));
        assertThatThrownBy(() -> TrajectoryParity.run(args("--train-iters", "3", "--load", ckpt.toString()),
                TrajectoryParity.DP2_DISTOPT))
                .isInstanceOf(UnsupportedOptimizerLayoutException.class)
                .hasMessageContaining("optim_dp_000.safetensors: optimizer state layout version 99")
                .hasMessageContaining("reads versions [1, 2]")
                .hasMessageContaining("--no-load-optim");
        List<StepResult> weightsOnly = TrajectoryParity.run(args("--train-iters", "3", "--load", ckpt.toString(),
                "--no-load-optim"), TrajectoryParity.DP2_DISTOPT);
        assertThat(weightsOnly).extracting(StepResult::iteration).containsExactly(3L);
    }

    /** Rewrites every optimizer file of {@code iter} with {@code metadata} and records the new checksums. */
    private static void rewriteOptimizerMetadata(Path iter, Map<String, String> metadata) throws IOException {
        List<Path> files;
        try (Stream<Path> all = Files.walk(iter)) {
            files = all.filter(f -> f.getFileName().toString().startsWith("optim_dp_")).toList();
        }
        assertThat(files).hasSize(2);
        for (Path f : files) {
            try (NDManager m = NDManager.newBaseManager(Device.cpu())) {
                Map<String, NDArray> tensors = new LinkedHashMap<>();
                try (SafetensorsReader r = SafetensorsReader.open(f)) {
                    for (String key : r.keys()) {
                        tensors.put(key, r.load(m, key));
                    }
                }
                SafetensorsWriter.write(f, tensors, metadata);
            }
        }
        List<String> all;
        try (Stream<Path> walk = Files.walk(iter)) {
            all = walk.filter(Files::isRegularFile).map(p -> iter.relativize(p).toString())
                    .filter(n -> !n.equals(DjlMetadata.FILE)).sorted().toList();
        }
        DjlMetadata.read(iter).withChecksums(FileChecksums.of(iter, all)).write(iter);
    }
}
