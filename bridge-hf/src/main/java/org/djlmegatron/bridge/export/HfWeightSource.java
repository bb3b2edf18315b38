package org.djlmegatron.bridge.export;

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
import org.djlmegatron.bridge.convert.SafetensorsRawReader;
import org.djlmegatron.bridge.convert.WeightSource;
import org.djlmegatron.bridge.hf.HfConfig;
import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * A Hugging Face checkpoint directory as a {@link WeightSource}: {@code config.json} gives the
 * model, the safetensors (single file or sharded) give the tensors, mapped to Megatron-Core layout
 * by {@link HfTensorMapping}. Every tensor must be used (known buffers excepted) and have the shape
 * the config implies.
 */
public final class HfWeightSource implements WeightSource {

    private final Path dir;
    private final HfConfig hfConfig;
    private final SafetensorsRawReader reader;
    private final HfTensorMapping mapping;
    private final Map<String, HfTensorMapping.Recipe> recipes = new HashMap<>();

    private HfWeightSource(Path dir, HfConfig hfConfig, SafetensorsRawReader reader) {
        this.dir = dir;
        this.hfConfig = hfConfig;
        this.reader = reader;
        this.mapping = new HfTensorMapping(hfConfig.modelType(), hfConfig.config());
    }

    /** Whether {@code dir} looks like a Hugging Face checkpoint. */
    public static boolean isHf(Path dir) {
        return Files.isRegularFile(dir.resolve("config.json"));
    }

    public static HfWeightSource open(Path dir) {
        HfConfig cfg = HfConfig.read(dir);
        SafetensorsRawReader reader = SafetensorsRawReader.open(dir);
        try {
            HfWeightSource src = new HfWeightSource(dir, cfg, reader);
            src.check();
            return src;
        } catch (RuntimeException e) {
            reader.close();
            throw e;
        }
    }

    private void check() {
        Set<String> used = new HashSet<>();
        for (ParamSpec s : ModelParams.of(hfConfig.config())) {
            HfTensorMapping.Recipe r = mapping.recipe(s);
            for (int i = 0; i < r.names().size(); i++) {
                String name = r.names().get(i);
                if (!reader.contains(name)) {
                    throw new CheckpointException(reader.source() + ": tensor '" + name + "' is missing (needed for "
                            + s.name() + " of the model config.json describes)");
                }
                long[] found = reader.info(name).shape();
                if (!Arrays.equals(found, r.shapes().get(i))) {
                    throw new CheckpointException(reader.source() + ": tensor '" + name + "' has shape "
                            + Arrays.toString(found) + " but config.json implies " + Arrays.toString(r.shapes().get(i)));
                }
                used.add(name);
            }
            recipes.put(s.name(), r);
        }
        for (String key : reader.keys()) {
            if (!used.contains(key) && !HfTensorMapping.IGNORED.matcher(key).matches()) {
                throw new CheckpointException(reader.source() + ": tensor '" + key + "' is not used by the model that "
                        + "config.json describes (model_type " + hfConfig.modelType() + ")");
            }
        }
    }

    /** The {@code model_type} of {@code config.json}. */
    public String modelType() {
        return hfConfig.modelType();
    }

    @Override
    public TransformerConfig config() {
        return hfConfig.config();
    }

    @Override
    public long iteration() {
        return 0;
    }

    @Override
    public SafetensorsDType dtype(ParamSpec spec) {
        return reader.info(recipes.get(spec.name()).names().get(0)).dtype();
    }

    @Override
    public HostTensor read(ParamSpec spec) {
        HfTensorMapping.Recipe r = recipes.get(spec.name());
        List<HostTensor> parts = new ArrayList<>();
        SafetensorsDType dtype = dtype(spec);
        for (int i = 0; i < r.names().size(); i++) {
            parts.add(reader.read(r.names().get(i), r.shapes().get(i)).to(dtype));
        }
        return mapping.toMcore(r, parts);
    }

    @Override
    public String describe() {
        return dir.toString();
    }

    @Override
    public void close() {
        reader.close();
    }
}
