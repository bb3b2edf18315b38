package org.djlmegatron.bridge.export;

import com.google.gson.GsonBuilder;
import com.google.gson.JsonObject;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.convert.HostTensor;
import org.djlmegatron.bridge.convert.ParamSpec;
import org.djlmegatron.bridge.convert.SafetensorsFileWriter;
import org.djlmegatron.bridge.convert.SinkPlan;
import org.djlmegatron.bridge.convert.WeightSink;
import org.djlmegatron.io.SafetensorsDType;

/**
 * Writes a Hugging Face checkpoint: safetensors split into shards of at most {@code maxShardSize}
 * bytes ({@code model.safetensors} when one suffices, else {@code model-0000i-of-0000n.safetensors}
 * plus {@code model.safetensors.index.json}), {@code config.json} and
 * {@code generation_config.json}. Tensors are grouped into shards in model order, as
 * {@code save_pretrained} does.
 */
public final class HfWeightSink implements WeightSink {

    /** {@code save_pretrained}'s default. */
    public static final long DEFAULT_MAX_SHARD = 5_000_000_000L;
    private static final Pattern SIZE = Pattern.compile("(\\d+(?:\\.\\d+)?)\\s*([KMGT]I?B|B)?");

    private final Path dir;
    private final SinkPlan plan;
    private final String modelType;
    private final HfTensorMapping mapping;
    private final Map<String, SafetensorsFileWriter> fileOf = new LinkedHashMap<>();
    private final List<SafetensorsFileWriter> writers = new ArrayList<>();
    private final Map<String, String> weightMap = new TreeMap<>();
    private long totalSize;

    private HfWeightSink(Path dir, SinkPlan plan, String modelType) {
        this.dir = dir;
        this.plan = plan;
        this.modelType = modelType;
        this.mapping = new HfTensorMapping(modelType, plan.config());
    }

    /**
     * Creates the shard files with their headers.
     *
     * @param modelType the architecture; {@link HfConfigWriter#inferModelType} when null
     */
    public static HfWeightSink create(Path dir, SinkPlan plan, String modelType, long maxShardSize) {
        String type = modelType != null ? modelType : HfConfigWriter.inferModelType(plan.config());
        HfConfigWriter.config(type, plan.config(), plan.mainDtype()); // refuses what the architecture cannot hold
        HfWeightSink sink = new HfWeightSink(dir, plan, type);
        try {
            sink.begin(maxShardSize);
        } catch (RuntimeException e) {
            sink.close();
            throw e;
        }
        return sink;
    }

    private void begin(long maxShardSize) {
        List<List<SafetensorsFileWriter.Entry>> shards = new ArrayList<>();
        List<SafetensorsFileWriter.Entry> current = new ArrayList<>();
        long currentSize = 0;
        for (ParamSpec spec : plan.params()) {
            HfTensorMapping.Recipe r = mapping.recipe(spec);
            SafetensorsDType dtype = plan.dtype(spec);
            for (int i = 0; i < r.names().size(); i++) {
                long[] shape = r.shapes().get(i);
                long bytes = dtype.elementSize();
                for (long d : shape) {
                    bytes *= d;
                }
                if (!current.isEmpty() && currentSize + bytes > maxShardSize) {
                    shards.add(current);
                    current = new ArrayList<>();
                    currentSize = 0;
                }
                current.add(new SafetensorsFileWriter.Entry(r.names().get(i), dtype, shape));
                currentSize += bytes;
                totalSize += bytes;
            }
        }
        shards.add(current);
        for (int s = 0; s < shards.size(); s++) {
            String name = shards.size() == 1 ? "model.safetensors"
                    : String.format("model-%05d-of-%05d.safetensors", s + 1, shards.size());
            SafetensorsFileWriter w = SafetensorsFileWriter.create(dir.resolve(name), shards.get(s), Map.of("format", "pt"));
            writers.add(w);
            for (SafetensorsFileWriter.Entry e : shards.get(s)) {
                fileOf.put(e.name(), w);
                weightMap.put(e.name(), name);
            }
        }
    }

    @Override
    public void put(ParamSpec spec, HostTensor full) {
        HfTensorMapping.Recipe r = mapping.recipe(spec);
        List<HostTensor> parts = mapping.toHf(r, full);
        for (int i = 0; i < parts.size(); i++) {
            String name = r.names().get(i);
            fileOf.get(name).write(name, parts.get(i));
        }
    }

    @Override
    public void finish() {
        writers.forEach(SafetensorsFileWriter::finish);
        close();
        if (writers.size() > 1) {
            JsonObject index = new JsonObject();
            JsonObject meta = new JsonObject();
            meta.addProperty("total_size", totalSize);
            index.add("metadata", meta);
            JsonObject map = new JsonObject();
            weightMap.forEach(map::addProperty);
            index.add("weight_map", map);
            writeJson("model.safetensors.index.json", index);
        }
        writeJson("config.json", HfConfigWriter.config(modelType, plan.config(), plan.mainDtype()));
        writeJson("generation_config.json", HfConfigWriter.generationConfig());
    }

    private void writeJson(String name, JsonObject json) {
        Path f = dir.resolve(name);
        try {
            Files.writeString(f, new GsonBuilder().setPrettyPrinting().serializeNulls().disableHtmlEscaping().create().toJson(json) + "\n",
                    StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new CheckpointException(f + ": write failed: " + e, e);
        }
    }

    @Override
    public void close() {
        writers.forEach(SafetensorsFileWriter::close);
    }

    /** Parses {@code 5GB}, {@code 500MB}, {@code 2GiB} or a byte count, as {@code save_pretrained} reads them. */
    public static long parseSize(String text) {
        Matcher m = SIZE.matcher(text.strip().toUpperCase(Locale.ROOT));
        if (!m.matches()) {
            throw new IllegalArgumentException("shard size '" + text + "': expected e.g. 5GB, 500MB, 2GiB or bytes");
        }
        double v = Double.parseDouble(m.group(1));
        String unit = m.group(2) == null ? "B" : m.group(2);
        long scale = switch (unit) {
            case "KB" -> 1_000L;
            case "MB" -> 1_000_000L;
            case "GB" -> 1_000_000_000L;
            case "TB" -> 1_000_000_000_000L;
            case "KIB" -> 1L << 10;
            case "MIB" -> 1L << 20;
            case "GIB" -> 1L << 30;
            case "TIB" -> 1L << 40;
            default -> 1L;
        };
        long bytes = (long) (v * scale);
        if (bytes < 1) {
            throw new IllegalArgumentException("shard size '" + text + "' must be at least one byte");
        }
        return bytes;
    }
}
