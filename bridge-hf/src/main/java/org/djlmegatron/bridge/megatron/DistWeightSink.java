package org.djlmegatron.bridge.megatron;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.convert.HostTensor;
import org.djlmegatron.bridge.convert.ParamSpec;
import org.djlmegatron.bridge.convert.SinkPlan;
import org.djlmegatron.bridge.convert.WeightSink;
import org.djlmegatron.io.torch.DcpCheckpointWriter;
import org.djlmegatron.io.torch.TorchSaveWriter;

/**
 * Writes Megatron's {@code torch_dist} checkpoint: global tensors stacked over layers and experts,
 * one chunk per layer (and expert) in {@code __0_0.distcp}, the linear layers' extra-state
 * objects, the common state ({@code args}, {@code checkpoint_version}, {@code iteration}) both as
 * the {@code common_state/shard_0_1} item current Megatron reads and as {@code common.pt} for
 * older releases, {@code metadata.json}, then the tracker. The format does not depend on the
 * parallel sizes: Megatron reshards on load.
 */
public final class DistWeightSink implements WeightSink {

    private static final String METADATA_JSON = "{\"sharded_backend\": \"torch_dist\", \"sharded_backend_version\": 1}";

    private final Path root;
    private final Path dir;
    private final SinkPlan plan;
    private final DcpCheckpointWriter writer;
    private final String checkpointId;

    private DistWeightSink(Path root, Path dir, SinkPlan plan, String checkpointId) {
        this.root = root;
        this.dir = dir;
        this.plan = plan;
        this.checkpointId = checkpointId;
        this.writer = DcpCheckpointWriter.create(dir);
    }

    /**
     * @param finalRoot where the checkpoint will live once moved into place (recorded as the
     *     storage's checkpoint id)
     */
    public static DistWeightSink create(Path root, SinkPlan plan, Path finalRoot) {
        Path dir = IterationTracker.createIterationDir(root, plan.iteration());
        return new DistWeightSink(root, dir, plan,
                finalRoot.resolve(IterationTracker.dirName(plan.iteration())).toString());
    }

    @Override
    public void put(ParamSpec spec, HostTensor full) {
        DistKeys.Location loc = DistKeys.candidates(spec).get(0);
        long[] shape = spec.shape();
        long[] global = DistKeys.globalShape(loc, shape, plan.config());
        int lead = loc.index().length;
        long[] offsets = new long[global.length];
        long[] sizes = global.clone();
        for (int i = 0; i < lead; i++) {
            offsets[i] = loc.index()[i];
            sizes[i] = 1;
        }
        writer.writeChunk(loc.key(), full.dtype(), global, offsets, sizes, full.buffer());
    }

    @Override
    public void finish() {
        for (int layer = 0; layer < plan.config().numLayers(); layer++) {
            for (String key : DistKeys.extraStates(plan.config(), layer)) {
                List<Object> none = new ArrayList<>();
                none.add(null);
                writer.writeObject(key, none);
            }
        }
        Map<Object, Object> common = new LinkedHashMap<>();
        common.put("args", MegatronConfig.toArgs(plan.config(), plan.layout(), plan.mainDtype()));
        common.put("checkpoint_version", 3.0);
        common.put("iteration", plan.iteration());
        writer.writeObject(DistWeightSource.COMMON_ITEM, List.of(common));
        writer.finish(checkpointId);
        writer.close();
        writeCommonFile(common);
        try {
            Files.writeString(dir.resolve("metadata.json"), METADATA_JSON, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new CheckpointException(dir.resolve("metadata.json") + ": write failed: " + e, e);
        }
        IterationTracker.writeTracker(root, plan.iteration());
    }

    private void writeCommonFile(Map<Object, Object> common) {
        Path file = dir.resolve(DistWeightSource.COMMON_FILE);
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            TorchSaveWriter.begin(ch, 0, "common", common, List.of(), file.toString()).finish();
            ch.force(true);
        } catch (IOException e) {
            throw new CheckpointException(file + ": write failed: " + e, e);
        }
    }

    @Override
    public void close() {
        writer.close();
    }
}
