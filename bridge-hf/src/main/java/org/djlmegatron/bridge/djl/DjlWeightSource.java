package org.djlmegatron.bridge.djl;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.convert.HostTensor;
import org.djlmegatron.bridge.convert.ModelParams;
import org.djlmegatron.bridge.convert.ParamSpec;
import org.djlmegatron.bridge.convert.RankFile;
import org.djlmegatron.bridge.convert.RankPlacement;
import org.djlmegatron.bridge.convert.ReadChecks;
import org.djlmegatron.bridge.convert.SafetensorsRawReader;
import org.djlmegatron.bridge.convert.TpSharding;
import org.djlmegatron.bridge.convert.WeightSource;
import org.djlmegatron.bridge.megatron.IterationTracker;
import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Reads the model weights of a djl-megatron checkpoint: {@code metadata.json} plus one
 * {@code mp_rank_TT[_PPP][_EEE]/model.safetensors} per rank with that rank's shards under global
 * Megatron-Core names. Every file must hold exactly the shards the metadata's layout puts there.
 */
public final class DjlWeightSource implements WeightSource {

    private final Path dir;
    private final DjlMetadata meta;
    private final Map<RankFile, SafetensorsRawReader> files;
    private final Map<String, RankPlacement.Target> homes = new HashMap<>();

    private DjlWeightSource(Path dir, DjlMetadata meta, Map<RankFile, SafetensorsRawReader> files) {
        this.dir = dir;
        this.meta = meta;
        this.files = files;
    }

    /** Opens a checkpoint root (or iteration directory) and checks every rank file's contents. */
    public static DjlWeightSource open(Path path) {
        return open(path, ReadChecks.ALL);
    }

    /**
     * As {@link #open(Path)}; with {@code checks.verifyChecksums()} every model file is first
     * compared with the checksum {@code metadata.json} records for it.
     */
    public static DjlWeightSource open(Path path, ReadChecks checks) {
        Path dir = IterationTracker.iterationDir(path);
        DjlMetadata meta = DjlMetadata.read(dir);
        String modelFile = meta.contents().get(DjlMetadata.MODEL);
        if (modelFile == null) {
            throw new CheckpointException(dir.resolve(DjlMetadata.FILE) + ": contents has no 'model' entry");
        }
        Map<RankFile, SafetensorsRawReader> files = new HashMap<>();
        try {
            for (RankFile f : RankFile.all(meta.layout())) {
                Path file = dir.resolve(f.dirName(meta.layout())).resolve(modelFile);
                if (!Files.isRegularFile(file)) {
                    throw new CheckpointException(file + ": missing (metadata.json says " + meta.layout() + ")");
                }
                if (checks.verifyChecksums()) {
                    FileChecksums.verify(dir, f.dirName(meta.layout()) + "/" + modelFile, meta.checksums());
                }
                files.put(f, SafetensorsRawReader.open(file));
            }
            DjlWeightSource src = new DjlWeightSource(dir, meta, files);
            src.check();
            return src;
        } catch (RuntimeException e) {
            files.values().forEach(SafetensorsRawReader::close);
            throw e;
        }
    }

    private void check() {
        RankPlacement placement = new RankPlacement(meta.config(), meta.layout(), false);
        Map<RankFile, Set<String>> expected = new HashMap<>();
        for (ParamSpec s : ModelParams.of(meta.config())) {
            List<RankPlacement.Target> targets = placement.targets(s);
            homes.put(s.name(), targets.get(0));
            long[] shape = TpSharding.shardShape(s.shape(), s.layout(), meta.layout().tp());
            for (RankPlacement.Target t : targets) {
                for (int r = 0; r < meta.layout().tp(); r++) {
                    RankFile f = new RankFile(r, t.pp(), t.ep());
                    SafetensorsRawReader reader = files.get(f);
                    if (!reader.contains(t.name())) {
                        throw new CheckpointException(reader.source() + ": tensor '" + t.name() + "' is missing");
                    }
                    long[] found = reader.info(t.name()).shape();
                    if (!Arrays.equals(found, shape)) {
                        throw new CheckpointException(reader.source() + ": tensor '" + t.name() + "' has shape "
                                + Arrays.toString(found) + ", expected " + Arrays.toString(shape));
                    }
                    expected.computeIfAbsent(f, k -> new HashSet<>()).add(t.name());
                }
            }
        }
        files.forEach((f, reader) -> {
            for (String key : reader.keys()) {
                if (!expected.getOrDefault(f, Set.of()).contains(key)) {
                    throw new CheckpointException(reader.source() + ": tensor '" + key
                            + "' does not belong in this rank's file for the model metadata.json describes");
                }
            }
        });
    }

    @Override
    public TransformerConfig config() {
        return meta.config();
    }

    @Override
    public long iteration() {
        return meta.iteration();
    }

    @Override
    public SafetensorsDType dtype(ParamSpec spec) {
        RankPlacement.Target t = homes.get(spec.name());
        return files.get(new RankFile(0, t.pp(), t.ep())).info(t.name()).dtype();
    }

    @Override
    public HostTensor read(ParamSpec spec) {
        RankPlacement.Target t = homes.get(spec.name());
        List<HostTensor> parts = new ArrayList<>();
        for (int r = 0; r < meta.layout().tp(); r++) {
            parts.add(files.get(new RankFile(r, t.pp(), t.ep())).read(t.name(), null));
        }
        return TpSharding.assemble(parts, spec.layout());
    }

    @Override
    public String describe() {
        return dir.toString();
    }

    @Override
    public void close() {
        files.values().forEach(SafetensorsRawReader::close);
    }
}
