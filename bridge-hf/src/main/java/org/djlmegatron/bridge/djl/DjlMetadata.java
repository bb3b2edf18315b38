package org.djlmegatron.bridge.djl;

import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.bridge.megatron.MegatronConfig;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * {@code metadata.json} of a djl-megatron checkpoint iteration: format name and version, the
 * iteration, the parallel sizes the rank directories are split in, the model config (Megatron
 * argument names, as {@link MegatronConfig} reads them) and which file each rank directory holds
 * for each kind of content. Model weights are {@code "model": "model.safetensors"}; the trainer
 * adds its own kinds (optimizer state, RNG) next to it.
 *
 * @param iteration training iteration (0 for a release)
 * @param layout tensor, pipeline and expert parallel sizes
 * @param config the model
 * @param contents content kind to file name in every rank directory
 * @param checksums {@link FileChecksums} of the files, by path relative to the iteration directory
 *     (empty in checkpoints written before checksums; verified by the readers)
 */
public record DjlMetadata(long iteration, ParallelLayout layout, TransformerConfig config,
        Map<String, String> contents, Map<String, String> checksums) {

    public static final String FILE = "metadata.json";
    public static final String FORMAT = "djl-megatron";
    public static final int VERSION = 1;
    public static final String MODEL = "model";
    public static final String MODEL_FILE = "model.safetensors";
    /** Model chunks per stage, written only with interleaving (older metadata: 1). */
    private static final String VIRTUAL = "virtual_pipeline_model_parallel_size";
    /** Layers of each virtual stage, written only for an uneven split (older metadata: even). */
    private static final String STAGE_LAYERS = "pipeline_stage_num_layers";

    public DjlMetadata {
        contents = Map.copyOf(contents);
        checksums = java.util.Collections.unmodifiableMap(new LinkedHashMap<>(checksums));
    }

    /** Metadata without checksums. */
    public DjlMetadata(long iteration, ParallelLayout layout, TransformerConfig config, Map<String, String> contents) {
        this(iteration, layout, config, contents, Map.of());
    }

    /** This metadata recording {@code checksums}. */
    public DjlMetadata withChecksums(Map<String, String> checksums) {
        return new DjlMetadata(iteration, layout, config, contents, checksums);
    }

    /** Whether {@code iterationDir} holds a djl-megatron checkpoint. */
    public static boolean isDjl(Path iterationDir) {
        Path f = iterationDir.resolve(FILE);
        if (!Files.isRegularFile(f)) {
            return false;
        }
        try {
            JsonObject o = JsonParser.parseString(Files.readString(f)).getAsJsonObject();
            return o.has("format") && FORMAT.equals(o.get("format").getAsString());
        } catch (IOException | RuntimeException e) {
            return false;
        }
    }

    public static DjlMetadata read(Path iterationDir) {
        Path f = iterationDir.resolve(FILE);
        try {
            JsonObject o = JsonParser.parseString(Files.readString(f)).getAsJsonObject();
            String format = o.get("format").getAsString();
            int version = o.get("format_version").getAsInt();
            if (!FORMAT.equals(format) || version != VERSION) {
                throw new CheckpointException(f + ": format '" + format + "' version " + version + ", expected '"
                        + FORMAT + "' version " + VERSION);
            }
            JsonObject p = o.getAsJsonObject("parallel");
            ParallelLayout layout = new ParallelLayout(p.get("tensor_model_parallel_size").getAsInt(),
                    p.get("pipeline_model_parallel_size").getAsInt(), p.get("expert_model_parallel_size").getAsInt(),
                    p.has(VIRTUAL) ? p.get(VIRTUAL).getAsInt() : 1, stageLayers(p));
            TransformerConfig config = MegatronConfig.fromJson(o.getAsJsonObject(MODEL), f + " model");
            Map<String, String> contents = new LinkedHashMap<>();
            o.getAsJsonObject("contents").entrySet().forEach(e -> contents.put(e.getKey(), e.getValue().getAsString()));
            Map<String, String> checksums = new LinkedHashMap<>();
            if (o.has("checksums")) {
                o.getAsJsonObject("checksums").entrySet().forEach(e -> checksums.put(e.getKey(), e.getValue().getAsString()));
            }
            return new DjlMetadata(o.get("iteration").getAsLong(), layout, config, contents, checksums);
        } catch (IOException e) {
            throw new CheckpointException(f + ": cannot read: " + e, e);
        } catch (CheckpointException e) {
            throw e;
        } catch (RuntimeException e) {
            throw new CheckpointException(f + ": malformed (" + e + "); expected format, format_version, iteration, "
                    + "parallel, model and contents", e);
        }
    }

    /** The recorded per-virtual-stage layer counts of an uneven split, or empty for the even split. */
    private static List<Integer> stageLayers(JsonObject parallel) {
        if (!parallel.has(STAGE_LAYERS)) {
            return List.of();
        }
        List<Integer> out = new ArrayList<>();
        parallel.getAsJsonArray(STAGE_LAYERS).forEach(e -> out.add(e.getAsInt()));
        return out;
    }

    /** Writes {@code iterationDir/metadata.json}. */
    public void write(Path iterationDir) {
        JsonObject o = new JsonObject();
        o.addProperty("format", FORMAT);
        o.addProperty("format_version", VERSION);
        o.addProperty("iteration", iteration);
        JsonObject p = new JsonObject();
        p.addProperty("tensor_model_parallel_size", layout.tp());
        p.addProperty("pipeline_model_parallel_size", layout.pp());
        p.addProperty("expert_model_parallel_size", layout.ep());
        if (layout.vp() > 1) {
            p.addProperty(VIRTUAL, layout.vp());
        }
        if (!layout.stageLayers().isEmpty()) {
            JsonArray counts = new JsonArray();
            layout.stageLayers().forEach(counts::add);
            p.add(STAGE_LAYERS, counts);
        }
        o.add("parallel", p);
        o.add(MODEL, MegatronConfig.toJson(config));
        JsonObject c = new JsonObject();
        contents.forEach(c::addProperty);
        o.add("contents", c);
        if (!checksums.isEmpty()) {
            JsonObject sums = new JsonObject();
            checksums.forEach(sums::addProperty);
            o.add("checksums", sums);
        }
        Path f = iterationDir.resolve(FILE);
        try {
            Files.writeString(f, new GsonBuilder().setPrettyPrinting().serializeNulls().disableHtmlEscaping().create().toJson(o),
                    StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new CheckpointException(f + ": write failed: " + e, e);
        }
    }
}
