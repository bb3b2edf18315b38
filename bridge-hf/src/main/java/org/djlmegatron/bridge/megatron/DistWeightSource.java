package org.djlmegatron.bridge.megatron;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
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
import org.djlmegatron.bridge.convert.WeightSource;
import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.io.torch.DcpCheckpoint;
import org.djlmegatron.io.torch.DcpTensor;
import org.djlmegatron.io.torch.FileSlice;
import org.djlmegatron.io.torch.PyObject;
import org.djlmegatron.io.torch.TorchArchive;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Megatron's {@code torch_dist} checkpoint: a PyTorch distributed checkpoint whose tensors are
 * global (independent of the TP/PP/EP it was saved with), stacked over layers and experts (see
 * {@link DistKeys}). The common state ({@code args}, {@code iteration}) is read from the
 * {@code common_state/shard_0_1} item, or from {@code common.pt} in checkpoints of older
 * Megatron releases. Tensors outside the model ({@code optimizer.*}, RNG state) are ignored;
 * any unknown model tensor is an error.
 */
public final class DistWeightSource implements WeightSource {

    public static final String COMMON_ITEM = "common_state/shard_0_1";
    public static final String COMMON_FILE = "common.pt";
    private static final List<String> MODEL_PREFIXES = List.of("embedding.", "decoder.", "output_layer.");

    private final DcpCheckpoint dcp;
    private final TransformerConfig config;
    private final long iteration;
    private final Map<String, DistKeys.Location> locations = new HashMap<>();

    private DistWeightSource(DcpCheckpoint dcp, TransformerConfig config, long iteration) {
        this.dcp = dcp;
        this.config = config;
        this.iteration = iteration;
    }

    /** Whether {@code iterationDir} is a distributed checkpoint. */
    public static boolean isDist(Path iterationDir) {
        return Files.isRegularFile(iterationDir.resolve(DcpCheckpoint.METADATA_FILE));
    }

    /**
     * Opens a checkpoint and locates every parameter of the model.
     *
     * @param path the checkpoint root or an iteration directory
     * @param modelConfig Megatron arguments as JSON, used when the common state has no {@code args}
     */
    public static DistWeightSource open(Path path, Path modelConfig) {
        Path dir = IterationTracker.iterationDir(path);
        DcpCheckpoint dcp = DcpCheckpoint.open(dir);
        try {
            Map<?, ?> common = common(dcp);
            TransformerConfig config;
            if (common.get("args") instanceof PyObject args) {
                config = MegatronConfig.fromArgs(args, dir.toString());
            } else if (modelConfig != null) {
                config = MegatronConfig.fromFile(modelConfig);
            } else {
                throw new CheckpointException(dir + ": the common state has no 'args' to take the model config from; "
                        + "pass --model-config with a JSON file of Megatron arguments (see docs/checkpoints.md)");
            }
            long iteration = common.get("iteration") instanceof Long it ? it : IterationTracker.iterationOf(dir);
            DistWeightSource src = new DistWeightSource(dcp, config, iteration);
            src.locateAll();
            return src;
        } catch (RuntimeException e) {
            dcp.close();
            throw e;
        }
    }

    private static Map<?, ?> common(DcpCheckpoint dcp) {
        Path legacy = dcp.directory().resolve(COMMON_FILE);
        Object common = null;
        if (dcp.objectKeys().contains(COMMON_ITEM)) {
            common = dcp.readObject(COMMON_ITEM);
            if (common instanceof List<?> l && l.size() == 1) {
                common = l.get(0); // Megatron stores sharded objects wrapped in a one-element list
            }
        } else if (Files.isRegularFile(legacy)) {
            try (FileChannel ch = FileChannel.open(legacy)) {
                common = TorchArchive.open(new FileSlice(legacy, ch, 0, ch.size())).root();
            } catch (IOException e) {
                throw new CheckpointException(legacy + ": cannot read: " + e, e);
            }
        }
        return common instanceof Map<?, ?> m ? m : Map.of();
    }

    private void locateAll() {
        Set<String> used = new HashSet<>();
        for (ParamSpec s : ModelParams.of(config)) {
            DistKeys.Location found = null;
            for (DistKeys.Location loc : DistKeys.candidates(s)) {
                if (dcp.tensors().containsKey(loc.key())) {
                    found = loc;
                    break;
                }
            }
            if (found == null) {
                throw new CheckpointException(dcp.directory() + ": no tensor for " + s.name() + " (looked for "
                        + DistKeys.candidates(s).stream().map(DistKeys.Location::key).toList() + ")");
            }
            DcpTensor t = dcp.tensors().get(found.key());
            long[] expected = DistKeys.globalShape(found, s.shape(), config);
            if (!Arrays.equals(t.size(), expected)) {
                throw new CheckpointException(dcp.directory() + ": tensor '" + found.key() + "' has shape "
                        + Arrays.toString(t.size()) + ", expected " + Arrays.toString(expected) + " (for " + s.name()
                        + ")");
            }
            locations.put(s.name(), found);
            used.add(found.key());
        }
        for (String key : dcp.tensors().keySet()) {
            if (!used.contains(key) && MODEL_PREFIXES.stream().anyMatch(key::startsWith)) {
                throw new CheckpointException(dcp.directory() + ": tensor '" + key + "' is not a parameter of the model"
                        + " the config describes");
            }
        }
    }

    @Override
    public TransformerConfig config() {
        return config;
    }

    @Override
    public long iteration() {
        return iteration;
    }

    @Override
    public SafetensorsDType dtype(ParamSpec spec) {
        return dcp.tensors().get(locations.get(spec.name()).key()).dtype();
    }

    @Override
    public HostTensor read(ParamSpec spec) {
        DistKeys.Location loc = locations.get(spec.name());
        long[] shape = spec.shape();
        int lead = loc.index().length;
        long[] offsets = new long[lead + shape.length];
        long[] sizes = new long[lead + shape.length];
        for (int i = 0; i < lead; i++) {
            offsets[i] = loc.index()[i];
            sizes[i] = 1;
        }
        System.arraycopy(shape, 0, sizes, lead, shape.length);
        return new HostTensor(dtype(spec), shape, dcp.read(loc.key(), offsets, sizes));
    }

    @Override
    public String describe() {
        return dcp.directory().toString();
    }

    @Override
    public void close() {
        dcp.close();
    }
}
