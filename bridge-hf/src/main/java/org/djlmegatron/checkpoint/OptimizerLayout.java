package org.djlmegatron.checkpoint;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.training.model.TrainableParameter;

/**
 * What one optimizer-state file holds: the saving rank's parameters in the trainer's order (name,
 * TP-shard shape, expert or not), and which part of its flat vectors the file has. The flat vector
 * of a rank is its dense parameters end to end, padded to a multiple of the data-parallel size,
 * then (under expert parallelism, where the expert parameters reduce over their own group) its
 * expert parameters likewise padded to the expert-data-parallel size; under the distributed
 * optimizer a file holds one shard of each region. Recorded in the file's safetensors metadata
 * (layout version 2), so a checkpoint reshards to any other TP, PP, EP and DP layout by parameter
 * name. Files without a version are version 1 (before this record): their layout is implied by
 * the model and the trainer state.
 *
 * @param params the saving rank's parameters, in flat order (the dense region's, then the expert region's)
 * @param dense the dense region's padded size and this file's range of it
 * @param experts the expert region's padded size and this file's range of it (all zero without expert parallelism)
 */
record OptimizerLayout(List<Entry> params, Region dense, Region experts) {

    /** The layout version this build writes. */
    static final int VERSION = 2;
    /** The versions this build reads. */
    static final List<Integer> READABLE = List.of(1, 2);
    static final String VERSION_KEY = "djlm_optimizer_layout_version";
    private static final String LAYOUT_KEY = "djlm_optimizer_layout";

    /**
     * One parameter.
     *
     * @param name global Megatron-Core name
     * @param shape its tensor-parallel shard's shape on the saving rank
     * @param expert whether it lies in the expert region
     */
    record Entry(String name, long[] shape, boolean expert) {
        long numel() {
            long n = 1;
            for (long d : shape) {
                n *= d;
            }
            return n;
        }
    }

    /**
     * A region of the flat vector.
     *
     * @param padded its padded size
     * @param start where this file's part begins
     * @param length how long this file's part is
     */
    record Region(long padded, long start, long length) {}

    /** One piece of a parameter's TP shard in a file: flat-vector offset in the file, offset in the shard, length. */
    record Piece(long fileOffset, long paramOffset, long length) {}

    /**
     * The layout of a rank's flat vectors, as the trainer builds them.
     *
     * @param split whether expert parameters have their own region (expert parallelism)
     * @param dpSize data-parallel size (the dense region's padding and shards)
     * @param edpSize expert-data-parallel size (the expert region's)
     */
    static OptimizerLayout of(List<TrainableParameter> params, boolean split, boolean sharded, int dpSize, int dpRank,
            int edpSize, int edpRank) {
        List<Entry> dense = new ArrayList<>();
        List<Entry> experts = new ArrayList<>();
        for (TrainableParameter p : params) {
            Entry e = new Entry(p.name(), p.array().getShape().getShape(), split && p.expert());
            (e.expert() ? experts : dense).add(e);
        }
        List<Entry> all = new ArrayList<>(dense);
        all.addAll(experts);
        return new OptimizerLayout(all, region(dense, sharded, dpSize, dpRank),
                split ? region(experts, sharded, edpSize, edpRank) : new Region(0, 0, 0));
    }

    private static Region region(List<Entry> params, boolean sharded, int size, int rank) {
        long n = params.stream().mapToLong(Entry::numel).sum();
        long padded = (n + size - 1) / size * size;
        return sharded ? new Region(padded, padded / size * rank, padded / size) : new Region(padded, 0, padded);
    }

    /** Elements of a flat vector in this file. */
    long fileLength() {
        return dense.length() + experts.length();
    }

    /** Where each parameter lies in this file, by parameter index (an empty list when outside its shard). */
    List<List<Piece>> pieces() {
        List<List<Piece>> out = new ArrayList<>(params.size());
        long denseAt = 0;
        long expertAt = 0;
        for (Entry p : params) {
            long at = p.expert() ? expertAt : denseAt;
            Region r = p.expert() ? experts : dense;
            long base = p.expert() ? dense.length() : 0;
            long from = Math.max(at, r.start());
            long to = Math.min(at + p.numel(), r.start() + r.length());
            out.add(from < to ? List.of(new Piece(base + from - r.start(), from - at, to - from)) : List.of());
            if (p.expert()) {
                expertAt += p.numel();
            } else {
                denseAt += p.numel();
            }
        }
        return out;
    }

    /** The safetensors metadata recording this layout and its version. */
    Map<String, String> toMetadata() {
        JsonObject o = new JsonObject();
        JsonArray ps = new JsonArray();
        for (Entry e : params) {
            JsonObject p = new JsonObject();
            p.addProperty("name", e.name());
            JsonArray shape = new JsonArray();
            for (long d : e.shape()) {
                shape.add(d);
            }
            p.add("shape", shape);
            p.addProperty("expert", e.expert());
            ps.add(p);
        }
        o.add("params", ps);
        o.add("dense", region(dense));
        o.add("experts", region(experts));
        Map<String, String> md = new LinkedHashMap<>();
        md.put(VERSION_KEY, Integer.toString(VERSION));
        md.put(LAYOUT_KEY, o.toString());
        return md;
    }

    private static JsonArray region(Region r) {
        JsonArray a = new JsonArray();
        a.add(r.padded());
        a.add(r.start());
        a.add(r.length());
        return a;
    }

    /**
     * The layout version {@code file}'s metadata records: 1 when none (files written before
     * versioning). A version this build cannot read is refused, saying what it can and what to do.
     */
    static int version(Map<String, String> metadata, Path file) {
        String v = metadata.get(VERSION_KEY);
        int version;
        try {
            version = v == null ? 1 : Integer.parseInt(v.trim());
        } catch (NumberFormatException e) {
            version = -1;
        }
        if (!READABLE.contains(version)) {
            throw new UnsupportedOptimizerLayoutException(file + ": optimizer state layout version " + v
                    + ", this build reads versions " + READABLE + " (a newer djl-megatron wrote it?); load it with the "
                    + "djl-megatron that wrote it, or take the weights only with --no-load-optim (or --finetune)");
        }
        return version;
    }

    /** The layout {@code file}'s metadata records (version 2), or null for a version-1 file. */
    static OptimizerLayout fromMetadata(Map<String, String> metadata, Path file) {
        if (version(metadata, file) < 2) {
            return null;
        }
        try {
            JsonObject o = JsonParser.parseString(metadata.get(LAYOUT_KEY)).getAsJsonObject();
            List<Entry> params = new ArrayList<>();
            for (var el : o.getAsJsonArray("params")) {
                JsonObject p = el.getAsJsonObject();
                JsonArray s = p.getAsJsonArray("shape");
                long[] shape = new long[s.size()];
                for (int d = 0; d < shape.length; d++) {
                    shape[d] = s.get(d).getAsLong();
                }
                params.add(new Entry(p.get("name").getAsString(), shape, p.get("expert").getAsBoolean()));
            }
            return new OptimizerLayout(params, region(o.getAsJsonArray("dense")), region(o.getAsJsonArray("experts")));
        } catch (RuntimeException e) {
            throw new CheckpointException(file + ": malformed '" + LAYOUT_KEY + "' metadata (" + e
                    + "); expected params, dense and experts", e);
        }
    }

    private static Region region(JsonArray a) {
        return new Region(a.get(0).getAsLong(), a.get(1).getAsLong(), a.get(2).getAsLong());
    }
}
