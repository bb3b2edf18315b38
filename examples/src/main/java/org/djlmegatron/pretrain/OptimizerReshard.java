package org.djlmegatron.pretrain;

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
import org.djlmegatron.nn.ShardedParameter;

/**
 * Optimizer state (fp32 masters, Adam moments or SGD momentum) saved at one TP x DP layout, laid
 * out again for another. Every flat vector of the checkpoint is a rank's parameters end to end in
 * parameter order ({@link org.djlmegatron.training.FlatLayout}), cut into DP shards under the
 * distributed optimizer. Per saved tensor rank the DP shards are joined back into that rank's
 * flat vector; per parameter the saved TP shards are assembled into the full tensor and this
 * rank's shard taken ({@link TpSharding}, as weights are resharded); the new flat vector is then
 * cut to this rank's DP shard. The moments have the parameters' shapes, so the same split applies.
 * Each rank reads every saved optimizer file of the state it needs, one state tensor at a time.
 */
final class OptimizerReshard {

    private final Path iterDir;
    private final TrainingCheckpoint.TrainerState saved;
    private final int savedTp;
    private final List<ShardedParameter> params;
    private final long[] savedOffsets;
    private final long[][] savedShapes;

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
    }

    /** The names of the saved state tensors ({@code masters} first). */
    List<String> keys() {
        try (SafetensorsReader r = SafetensorsReader.open(file(0, 0))) {
            List<String> keys = new ArrayList<>(List.of("masters"));
            r.keys().stream().filter(k -> !k.equals("masters")).sorted().forEach(keys::add);
            return keys;
        }
    }

    /**
     * State tensor {@code key} for this rank: the flat vector of its parameters' new TP shards,
     * padded to {@code newPadded}, elements {@code [start, start + length)}.
     */
    float[] load(String key, long newPadded, long start, long length) {
        float[][] savedFlats = new float[savedTp][];
        for (int t = 0; t < savedTp; t++) {
            savedFlats[t] = savedFlat(t, key);
        }
        float[] flat = new float[Math.toIntExact(newPadded)];
        int at = 0;
        for (int i = 0; i < params.size(); i++) {
            ShardedParameter p = params.get(i);
            List<HostTensor> shards = new ArrayList<>(savedTp);
            for (int t = 0; t < savedTp; t++) {
                shards.add(tensor(savedFlats[t], savedOffsets[i], savedShapes[i]));
            }
            HostTensor full = TpSharding.assemble(shards, p.layout());
            float[] mine = TpSharding.shard(full, p.layout(), p.tpRank(), p.tpSize()).toFloats();
            System.arraycopy(mine, 0, flat, at, mine.length);
            at += mine.length;
        }
        float[] out = new float[Math.toIntExact(length)];
        System.arraycopy(flat, Math.toIntExact(start), out, 0, out.length);
        return out;
    }

    /** Saved TP rank {@code t}'s whole flat vector of {@code key}: its DP shards joined. */
    private float[] savedFlat(int t, String key) {
        int files = saved.distributedOptimizer() ? saved.dpSize() : 1;
        float[] flat = new float[Math.toIntExact(saved.flatSize())];
        int at = 0;
        for (int d = 0; d < files; d++) {
            Path f = file(t, d);
            try (SafetensorsReader r = SafetensorsReader.open(f)) {
                if (!r.contains(key)) {
                    throw new CheckpointException(f + ": no optimizer state '" + key + "' (found " + r.keys() + ")");
                }
                float[] part = r.loadFloats(key);
                if (part.length != flat.length / files) {
                    throw new CheckpointException(f + ": '" + key + "' has " + part.length + " elements, expected "
                            + flat.length / files);
                }
                System.arraycopy(part, 0, flat, at, part.length);
                at += part.length;
            }
        }
        return flat;
    }

    private Path file(int tpRank, int dpFile) {
        String dir = new RankFile(tpRank, 0, 0).dirName(new ParallelLayout(savedTp, 1, 1));
        return iterDir.resolve(dir).resolve(TrainingCheckpoint.optimizerFile(dpFile));
    }

    private static HostTensor tensor(float[] flat, long offset, long[] shape) {
        int n = Math.toIntExact(numel(shape));
        ByteBuffer b = ByteBuffer.allocate(n * 4).order(ByteOrder.LITTLE_ENDIAN);
        b.asFloatBuffer().put(flat, Math.toIntExact(offset), n);
        return new HostTensor(SafetensorsDType.F32, shape, b.array());
    }

    private static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return n;
    }

    /** Every state tensor of the checkpoint for this rank, by name. */
    Map<String, float[]> loadAll(long newPadded, long start, long length) {
        Map<String, float[]> out = new LinkedHashMap<>();
        for (String key : keys()) {
            out.put(key, load(key, newPadded, start, length));
        }
        return out;
    }
}
