package org.djlmegatron.bridge.djl;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.convert.HostTensor;
import org.djlmegatron.bridge.convert.ParamSpec;
import org.djlmegatron.bridge.convert.RankFile;
import org.djlmegatron.bridge.convert.RankPlacement;
import org.djlmegatron.bridge.convert.SafetensorsFileWriter;
import org.djlmegatron.bridge.convert.SinkPlan;
import org.djlmegatron.bridge.convert.TpSharding;
import org.djlmegatron.bridge.convert.WeightSink;
import org.djlmegatron.bridge.megatron.IterationTracker;

/**
 * Writes the model weights of a djl-megatron checkpoint: {@code <root>/iter_XXXXXXX/} (or
 * {@code release/}) with one {@code mp_rank_TT[_PPP][_EEE]/model.safetensors} per rank holding its
 * shards under global Megatron-Core names, then {@code metadata.json}, then the tracker
 * {@code latest_checkpointed_iteration.txt}.
 */
public final class DjlWeightSink implements WeightSink {

    private final Path root;
    private final Path dir;
    private final SinkPlan plan;
    private final RankPlacement placement;
    private final Map<RankFile, SafetensorsFileWriter> writers = new LinkedHashMap<>();

    private DjlWeightSink(Path root, SinkPlan plan) {
        this.root = root;
        this.plan = plan;
        this.placement = new RankPlacement(plan.config(), plan.layout(), false);
        this.dir = IterationTracker.createIterationDir(root, plan.iteration());
    }

    /** Creates every rank file under {@code root} with its header. */
    public static DjlWeightSink create(Path root, SinkPlan plan) {
        DjlWeightSink sink = new DjlWeightSink(root, plan);
        try {
            sink.begin();
        } catch (RuntimeException e) {
            sink.close();
            throw e;
        }
        return sink;
    }

    private void begin() {
        Map<RankFile, List<SafetensorsFileWriter.Entry>> entries = new LinkedHashMap<>();
        RankFile.all(plan.layout()).forEach(f -> entries.put(f, new ArrayList<>()));
        for (ParamSpec spec : plan.params()) {
            long[] shape = TpSharding.shardShape(spec.shape(), spec.layout(), plan.layout().tp());
            for (RankPlacement.Target t : placement.targets(spec)) {
                for (int r = 0; r < plan.layout().tp(); r++) {
                    entries.get(new RankFile(r, t.pp(), t.ep()))
                            .add(new SafetensorsFileWriter.Entry(t.name(), plan.dtype(spec), shape));
                }
            }
        }
        for (Map.Entry<RankFile, List<SafetensorsFileWriter.Entry>> e : entries.entrySet()) {
            RankFile f = e.getKey();
            Path rankDir = dir.resolve(f.dirName(plan.layout()));
            try {
                Files.createDirectories(rankDir);
            } catch (IOException ex) {
                throw new CheckpointException(rankDir + ": cannot create: " + ex, ex);
            }
            Map<String, String> meta = new HashMap<>();
            meta.put("format", "pt");
            writers.put(f, SafetensorsFileWriter.create(rankDir.resolve(DjlMetadata.MODEL_FILE), e.getValue(), meta));
        }
    }

    @Override
    public void put(ParamSpec spec, HostTensor full) {
        int tp = plan.layout().tp();
        for (RankPlacement.Target t : placement.targets(spec)) {
            for (int r = 0; r < tp; r++) {
                writers.get(new RankFile(r, t.pp(), t.ep()))
                        .write(t.name(), TpSharding.shardBytes(full, spec.layout(), r, tp));
            }
        }
    }

    @Override
    public void finish() {
        writers.values().forEach(SafetensorsFileWriter::finish);
        close();
        List<String> files = writers.keySet().stream()
                .map(f -> f.dirName(plan.layout()) + "/" + DjlMetadata.MODEL_FILE).toList();
        new DjlMetadata(plan.iteration(), plan.layout(), plan.config(),
                Map.of(DjlMetadata.MODEL, DjlMetadata.MODEL_FILE), FileChecksums.of(dir, files)).write(dir);
        IterationTracker.writeTracker(root, plan.iteration());
    }

    @Override
    public void close() {
        writers.values().forEach(SafetensorsFileWriter::close);
    }
}
