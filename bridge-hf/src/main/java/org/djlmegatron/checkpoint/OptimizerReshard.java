package org.djlmegatron.checkpoint;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.convert.HostTensor;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.bridge.convert.RankFile;
import org.djlmegatron.bridge.convert.TpSharding;
import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.io.SafetensorsReader;
import org.djlmegatron.nn.ShardLayout;
import org.djlmegatron.nn.ShardedParameter;

/**
 * FlatOptimizer state (fp32 masters, Adam moments or SGD momentum) saved at one TP x PP x EP x DP
 * layout, laid out again for another. Every optimizer file says which parameters' pieces it holds
 * ({@link OptimizerLayout}); they are indexed by parameter name and saved tensor rank. Per
 * parameter of this rank that falls in its new range, the saved TP shards are put together from
 * their pieces (any file that holds them: the stage, expert rank and DP shard that saved them;
 * replicas hold equal values), the full tensor assembled and this rank's shard taken
 * ({@link TpSharding}, as weights are resharded: the moments have the parameters' shapes, so the
 * same split applies). Only one parameter's tensors are in memory at a time; each saved file is
 * opened once. Version-1 files (no layout recorded) were saved at PP = EP = 1 with this rank's
 * parameters: their layout is rebuilt from the trainer state.
 */
final class OptimizerReshard implements AutoCloseable {

    /** Where a piece of a saved TP shard lies. */
    private record Located(int tpRank, Path file, long fileLength, long[] shape, OptimizerLayout.Piece piece) {}

    private final Path iterDir;
    private final int savedTp;
    private final Map<String, List<Located>> pieces = new HashMap<>();
    private final Map<Path, SafetensorsReader> readers = new LinkedHashMap<>();
    private final List<String> keys = new ArrayList<>();

    /**
     * @param saved the checkpoint's layout
     * @param params this rank's parameters in the trainer's order (for version-1 files)
     */
    OptimizerReshard(Path iterDir, ParallelLayout saved, TrainingCheckpoint.TrainerState state,
            List<ShardedParameter> params) {
        this.iterDir = iterDir;
        this.savedTp = saved.tp();
        for (RankFile f : RankFile.all(saved)) {
            for (Path file : optimizerFiles(iterDir.resolve(f.dirName(saved)))) {
                SafetensorsReader r = readers.computeIfAbsent(file, SafetensorsReader::open);
                OptimizerLayout layout = OptimizerLayout.fromMetadata(r.metadata(), file);
                if (layout == null) {
                    layout = versionOne(state, params, file);
                }
                index(f.tp(), file, layout);
                if (keys.isEmpty()) {
                    keys.add("masters");
                    r.keys().stream().filter(k -> !k.equals("masters")).sorted().forEach(keys::add);
                }
            }
        }
        if (keys.isEmpty()) {
            throw new CheckpointException(iterDir + ": no optimizer files (optim_dp_RRR.safetensors) in the rank "
                    + "directories of " + saved);
        }
    }

    /** A version-1 file: this rank's parameters at the saved TP size, one dense region cut into DP shards. */
    private OptimizerLayout versionOne(TrainingCheckpoint.TrainerState saved, List<ShardedParameter> params, Path file) {
        List<OptimizerLayout.Entry> entries = new ArrayList<>();
        long n = 0;
        for (ShardedParameter p : params) {
            long[] shape = TpSharding.shardShape(p.fullShape().getShape(), p.layout(), savedTp);
            entries.add(new OptimizerLayout.Entry(p.name(), shape, false));
            n += entries.get(entries.size() - 1).numel();
        }
        long padded = (n + saved.dpSize() - 1) / saved.dpSize() * saved.dpSize();
        if (padded != saved.flatSize()) {
            throw new CheckpointException(iterDir.resolve(TrainingCheckpoint.TRAINER_FILE) + ": flat optimizer "
                    + "vectors of " + saved.flatSize() + " elements at TP " + savedTp + " x DP " + saved.dpSize()
                    + ", this model has " + padded + " there (a different model)");
        }
        String name = file.getFileName().toString();
        int shard = Integer.parseInt(name.substring("optim_dp_".length(), name.indexOf('.')));
        long length = saved.distributedOptimizer() ? padded / saved.dpSize() : padded;
        return new OptimizerLayout(entries, new OptimizerLayout.Region(padded, length * shard, length),
                new OptimizerLayout.Region(0, 0, 0));
    }

    private void index(int tpRank, Path file, OptimizerLayout layout) {
        List<List<OptimizerLayout.Piece>> all = layout.pieces();
        for (int i = 0; i < layout.params().size(); i++) {
            OptimizerLayout.Entry e = layout.params().get(i);
            for (OptimizerLayout.Piece p : all.get(i)) {
                pieces.computeIfAbsent(e.name(), k -> new ArrayList<>())
                        .add(new Located(tpRank, file, layout.fileLength(), e.shape(), p));
            }
        }
    }

    private static List<Path> optimizerFiles(Path rankDir) {
        try (Stream<Path> files = Files.list(rankDir)) {
            return files.filter(f -> f.getFileName().toString().matches("optim_dp_\\d+\\.safetensors")).sorted().toList();
        } catch (IOException e) {
            throw new CheckpointException(rankDir + ": cannot list: " + e, e);
        }
    }

    /** Every state tensor of the checkpoint ({@code masters} first) laid out as {@code target} says, for {@code params}. */
    Map<String, float[]> loadAll(OptimizerLayout target, List<ShardedParameter> params) {
        Map<String, ShardedParameter> byName = new HashMap<>();
        params.forEach(p -> byName.putIfAbsent(p.name(), p));
        Map<String, float[]> out = new LinkedHashMap<>();
        List<List<OptimizerLayout.Piece>> pieces = target.pieces();
        for (String key : keys) {
            float[] flat = new float[Math.toIntExact(target.fileLength())];
            for (int i = 0; i < target.params().size(); i++) {
                List<OptimizerLayout.Piece> mine = pieces.get(i);
                if (mine.isEmpty()) {
                    continue;
                }
                float[] shard = newShard(key, byName.get(target.params().get(i).name()));
                for (OptimizerLayout.Piece p : mine) {
                    System.arraycopy(shard, (int) p.paramOffset(), flat, (int) p.fileOffset(), (int) p.length());
                }
            }
            out.put(key, flat); // beyond the last parameter of a region: padding, zeros
        }
        return out;
    }

    /** Parameter {@code p}'s new shard of state {@code key}, from its saved TP shards. */
    private float[] newShard(String key, ShardedParameter p) {
        int ranks = p.layout() == ShardLayout.REPLICATED ? 1 : savedTp; // a replicated tensor: rank 0's copy
        List<HostTensor> shards = new ArrayList<>(ranks);
        for (int t = 0; t < ranks; t++) {
            shards.add(savedShard(key, p.name(), t));
        }
        HostTensor full = TpSharding.assemble(shards, p.layout());
        return TpSharding.shard(full, p.layout(), p.tpRank(), p.tpSize()).toFloats();
    }

    /** Saved TP rank {@code t}'s shard of parameter {@code name}'s state {@code key}, from its pieces in any file. */
    private HostTensor savedShard(String key, String name, int t) {
        List<Located> found = pieces.getOrDefault(name, List.of()).stream().filter(l -> l.tpRank() == t)
                .sorted(Comparator.comparingLong(l -> l.piece().paramOffset())).toList();
        if (found.isEmpty()) {
            throw new CheckpointException(iterDir + ": no optimizer state for parameter '" + name + "' at tensor rank "
                    + t + " (the checkpoint holds another model)");
        }
        long[] shape = found.get(0).shape();
        long numel = Arrays.stream(shape).reduce(1, (a, b) -> a * b);
        float[] values = new float[Math.toIntExact(numel)];
        long filled = 0;
        for (Located l : found) { // replicas overlap: read each element once
            long end = l.piece().paramOffset() + l.piece().length();
            if (l.piece().paramOffset() > filled) {
                break;
            }
            if (end > filled) {
                long skip = filled - l.piece().paramOffset();
                read(l, key, l.piece().fileOffset() + skip, end - filled, values, filled);
                filled = end;
            }
        }
        if (filled != numel) {
            throw new CheckpointException(iterDir + ": the optimizer files hold elements [0, " + filled + ") of parameter '"
                    + name + "' at tensor rank " + t + ", it has " + numel + " (a file is missing)");
        }
        return tensor(values, shape);
    }

    private void read(Located l, String key, long from, long length, float[] into, long at) {
        SafetensorsReader r = readers.get(l.file());
        long[] shape = r.contains(key) ? r.info(key).shape() : null;
        if (shape == null || shape.length != 1 || shape[0] != l.fileLength()) {
            throw new CheckpointException(r.source() + ": optimizer state '" + key + "' should be a vector of "
                    + l.fileLength() + " elements, found " + (shape == null ? "none (has " + r.keys() + ")"
                    : Arrays.toString(shape)));
        }
        try (NDManager m = NDManager.newBaseManager(Device.cpu());
                NDArray slice = r.loadSlice(m, key, 0, from, length)) {
            float[] part = slice.toFloatArray();
            System.arraycopy(part, 0, into, (int) at, part.length);
        }
    }

    private static HostTensor tensor(float[] values, long[] shape) {
        ByteBuffer b = ByteBuffer.allocate(values.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        b.asFloatBuffer().put(values);
        return new HostTensor(SafetensorsDType.F32, shape, b.array());
    }

    @Override
    public void close() {
        readers.values().forEach(SafetensorsReader::close);
    }
}
