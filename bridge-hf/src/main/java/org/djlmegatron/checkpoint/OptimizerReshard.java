package org.djlmegatron.checkpoint;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
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
 * FlatOptimizer state (fp32 masters, Adam moments or SGD momentum) saved at one TP x DP layout, laid
 * out again for another. Every flat vector of the checkpoint is a rank's parameters end to end in
 * parameter order ({@link org.djlmegatron.training.FlatLayout}), cut into DP shards under the
 * distributed optimizer. Per parameter that falls in this rank's new range, its range of the saved
 * flat vectors is read from each saved tensor rank (across DP shard files where it straddles
 * them), the full tensor assembled and this rank's shard taken ({@link TpSharding}, as weights are
 * resharded: the moments have the parameters' shapes, so the same split applies). Only one
 * parameter's tensors are in memory at a time; each saved file is opened once.
 */
final class OptimizerReshard implements AutoCloseable {

    private final Path iterDir;
    private final TrainingCheckpoint.TrainerState saved;
    private final int savedTp;
    private final List<ShardedParameter> params;
    private final long[] savedOffsets;
    private final long[][] savedShapes;
    private final long fileLength;
    private final Map<Path, SafetensorsReader> readers = new LinkedHashMap<>();

    /**
     * @param params this rank's parameters in the trainer's order (their TP rank and size are the new ones)
     */
    OptimizerReshard(Path iterDir, TrainingCheckpoint.TrainerState saved, int savedTp, List<ShardedParameter> params) {
        this.iterDir = iterDir;
        this.saved = saved;
        this.savedTp = savedTp;
        this.params = params;
        savedOffsets = new long[params.size() + 1];
        savedShapes = new long[params.size()][];
        for (int i = 0; i < params.size(); i++) {
            ShardedParameter p = params.get(i);
            savedShapes[i] = TpSharding.shardShape(p.fullShape().getShape(), p.layout(), savedTp);
            savedOffsets[i + 1] = savedOffsets[i] + numel(savedShapes[i]);
        }
        long padded = (savedOffsets[params.size()] + saved.dpSize() - 1) / saved.dpSize() * saved.dpSize();
        if (padded != saved.flatSize()) {
            throw new CheckpointException(iterDir.resolve(TrainingCheckpoint.TRAINER_FILE) + ": flat optimizer "
                    + "vectors of " + saved.flatSize() + " elements at TP " + savedTp + " x DP " + saved.dpSize()
                    + ", this model has " + padded + " there (a different model)");
        }
        fileLength = saved.distributedOptimizer() ? saved.flatSize() / saved.dpSize() : saved.flatSize();
    }

    /** Every state tensor of the checkpoint ({@code masters} first) for elements {@code [start, start + length)} of this rank's new flat vector. */
    Map<String, float[]> loadAll(long start, long length) {
        Map<String, float[]> out = new LinkedHashMap<>();
        for (String key : keys()) {
            out.put(key, load(key, start, length));
        }
        return out;
    }

    private List<String> keys() {
        List<String> keys = new ArrayList<>(List.of("masters"));
        reader(0, 0).keys().stream().filter(k -> !k.equals("masters")).sorted().forEach(keys::add);
        return keys;
    }

    /** State tensor {@code key}: this rank's parameters' new TP shards end to end, elements {@code [start, start + length)}. */
    private float[] load(String key, long start, long length) {
        float[] out = new float[Math.toIntExact(length)];
        long end = start + length;
        long at = 0; // where the parameter begins in the new flat vector
        for (int i = 0; i < params.size(); i++) {
            ShardedParameter p = params.get(i);
            long n = p.localShape().size();
            if (at < end && at + n > start) {
                float[] mine = newShard(key, i);
                long from = Math.max(at, start);
                long to = Math.min(at + n, end);
                System.arraycopy(mine, (int) (from - at), out, (int) (from - start), (int) (to - from));
            }
            at += n;
        }
        return out; // beyond the last parameter: padding, zeros
    }

    /** Parameter {@code i}'s new shard of state {@code key}, from its saved TP shards. */
    private float[] newShard(String key, int i) {
        ShardedParameter p = params.get(i);
        int ranks = p.layout() == ShardLayout.REPLICATED ? 1 : savedTp; // a replicated tensor: rank 0's copy
        List<HostTensor> shards = new ArrayList<>(ranks);
        for (int t = 0; t < ranks; t++) {
            shards.add(tensor(savedRange(t, key, savedOffsets[i], savedOffsets[i + 1]), savedShapes[i]));
        }
        HostTensor full = TpSharding.assemble(shards, p.layout());
        return TpSharding.shard(full, p.layout(), p.tpRank(), p.tpSize()).toFloats();
    }

    /** Elements {@code [from, to)} of saved TP rank {@code t}'s flat vector of {@code key}, across its DP shard files. */
    private float[] savedRange(int t, String key, long from, long to) {
        float[] out = new float[Math.toIntExact(to - from)];
        for (long pos = from; pos < to; ) {
            int file = (int) (pos / fileLength);
            long fileEnd = Math.min(to, (file + 1) * fileLength);
            SafetensorsReader r = reader(t, file);
            long[] shape = r.contains(key) ? r.info(key).shape() : null;
            if (shape == null || shape.length != 1 || shape[0] != fileLength) {
                throw new CheckpointException(r.source() + ": optimizer state '" + key + "' should be a vector of "
                        + fileLength + " elements, found " + (shape == null ? "none (has " + r.keys() + ")"
                        : java.util.Arrays.toString(shape)));
            }
            try (NDManager m = NDManager.newBaseManager(Device.cpu());
                    NDArray slice = r.loadSlice(m, key, 0, pos - file * fileLength, fileEnd - pos)) {
                float[] part = slice.toFloatArray();
                System.arraycopy(part, 0, out, (int) (pos - from), part.length);
            }
            pos = fileEnd;
        }
        return out;
    }

    private SafetensorsReader reader(int tpRank, int dpFile) {
        String dir = new RankFile(tpRank, 0, 0).dirName(new ParallelLayout(savedTp, 1, 1));
        Path f = iterDir.resolve(dir).resolve(TrainingCheckpoint.optimizerFile(dpFile));
        return readers.computeIfAbsent(f, SafetensorsReader::open);
    }

    private static HostTensor tensor(float[] values, long[] shape) {
        ByteBuffer b = ByteBuffer.allocate(values.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        b.asFloatBuffer().put(values);
        return new HostTensor(SafetensorsDType.F32, shape, b.array());
    }

    private static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return n;
    }

    @Override
    public void close() {
        readers.values().forEach(SafetensorsReader::close);
    }
}
