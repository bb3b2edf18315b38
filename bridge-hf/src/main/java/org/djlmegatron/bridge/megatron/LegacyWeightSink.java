package org.djlmegatron.bridge.megatron;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
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
import org.djlmegatron.bridge.convert.SinkPlan;
import org.djlmegatron.bridge.convert.TpSharding;
import org.djlmegatron.bridge.convert.WeightSink;
import org.djlmegatron.io.torch.PyObject;
import org.djlmegatron.io.torch.TorchSaveWriter;
import org.djlmegatron.io.torch.TorchTensor;

/**
 * Writes Megatron-LM's legacy {@code torch} checkpoint at any TP, PP and EP, with even, uneven or
 * interleaved pipeline stages: one {@code model_optim_rng.pt} per rank with Megatron-Core keys
 * numbered locally per model chunk and expert rank (under {@code model}, or {@code model0},
 * {@code model1}, ... per virtual stage as Megatron's {@code save_checkpoint} writes them), {@code _extra_state: None} after each linear layer (as Megatron's local layer spec saves
 * them, so strict loading finds every key), {@code args}, {@code iteration} and {@code
 * checkpoint_version 3.0}. With tied embeddings and several stages the last stage gets a copy of
 * the embedding as {@code output_layer.weight}, as Megatron keeps one there. Model weights only:
 * load with {@code --no-load-optim --no-load-rng}.
 */
public final class LegacyWeightSink implements WeightSink {

    private record Shard(RankFile file, String storageKey) {}

    private final Path root;
    private final SinkPlan plan;
    private final RankPlacement placement;
    private final Map<RankFile, FileChannel> channels = new LinkedHashMap<>();
    private final Map<RankFile, TorchSaveWriter> writers = new LinkedHashMap<>();
    private final Map<String, List<Shard>> destinations = new HashMap<>();

    private LegacyWeightSink(Path root, SinkPlan plan) {
        this.root = root;
        this.plan = plan;
        this.placement = new RankPlacement(plan.config(), plan.layout(), true);
    }

    /** Creates every rank file under {@code root} and writes their pickles. */
    public static LegacyWeightSink create(Path root, SinkPlan plan) {
        LegacyWeightSink sink = new LegacyWeightSink(root, plan);
        try {
            sink.begin();
        } catch (RuntimeException e) {
            sink.close();
            throw e;
        }
        return sink;
    }

    private void begin() {
        Path iter = IterationTracker.createIterationDir(root, plan.iteration());
        int chunks = plan.layout().vp();
        Map<RankFile, List<Map<Object, Object>>> models = new LinkedHashMap<>();
        Map<RankFile, List<TorchTensor>> tensors = new LinkedHashMap<>();
        for (RankFile f : RankFile.all(plan.layout())) {
            List<Map<Object, Object>> perChunk = new ArrayList<>();
            for (int c = 0; c < chunks; c++) {
                perChunk.add(new LinkedHashMap<>());
            }
            models.put(f, perChunk);
            tensors.put(f, new ArrayList<>());
        }
        for (ParamSpec spec : plan.params()) {
            declare(spec, placement.targets(spec), models, tensors);
        }
        if (plan.config().tieEmbeddings() && plan.layout().pp() * chunks > 1) {
            ParamSpec embedding = plan.params().get(0);
            List<RankPlacement.Target> copies = new ArrayList<>();
            for (int e = 0; e < plan.layout().ep(); e++) { // the last virtual stage's copy
                copies.add(new RankPlacement.Target(plan.layout().pp() - 1, e, chunks - 1, "output_layer.weight"));
            }
            declare(embedding, copies, models, tensors);
        }
        PyObject args = MegatronConfig.toArgs(plan.config(), plan.layout(), plan.mainDtype());
        for (RankFile f : models.keySet()) {
            Path dir = iter.resolve(f.dirName(plan.layout()));
            Path file = dir.resolve(LegacyWeightSource.FILE);
            FileChannel ch;
            try {
                Files.createDirectories(dir);
                ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
            } catch (IOException e) {
                throw new CheckpointException(file + ": cannot create: " + e, e);
            }
            channels.put(f, ch);
            Map<Object, Object> state = new LinkedHashMap<>();
            state.put("args", args);
            state.put("checkpoint_version", 3.0);
            state.put("iteration", plan.iteration());
            List<Map<Object, Object>> perChunk = models.get(f);
            if (chunks == 1) {
                state.put("model", withExtraStates(perChunk.get(0)));
            } else { // Megatron's save_checkpoint: one state dict per model chunk, model0, model1, ...
                for (int c = 0; c < chunks; c++) {
                    state.put("model" + c, withExtraStates(perChunk.get(c)));
                }
            }
            writers.put(f, TorchSaveWriter.begin(ch, 0, "model_optim_rng", state, tensors.get(f), file.toString()));
        }
    }

    /** Declares the shards of {@code spec} in each target file's chunk, tensor-parallel ranks in order. */
    private void declare(ParamSpec spec, List<RankPlacement.Target> targets,
            Map<RankFile, List<Map<Object, Object>>> models, Map<RankFile, List<TorchTensor>> tensors) {
        long[] shape = TpSharding.shardShape(spec.shape(), spec.layout(), plan.layout().tp());
        for (RankPlacement.Target t : targets) {
            for (int r = 0; r < plan.layout().tp(); r++) {
                RankFile f = new RankFile(r, t.pp(), t.ep());
                String key = Integer.toString(tensors.get(f).size());
                TorchTensor tensor = TorchTensor.contiguous(key, plan.dtype(spec), shape);
                models.get(f).get(t.chunk()).put(t.name(), tensor);
                tensors.get(f).add(tensor);
                destinations.computeIfAbsent(spec.name(), k -> new ArrayList<>()).add(new Shard(f, key));
            }
        }
    }

    /** The state dict with {@code <module>._extra_state = None} after each linear module's tensors. */
    private static Map<Object, Object> withExtraStates(Map<Object, Object> model) {
        Map<Object, Object> out = new LinkedHashMap<>();
        List<Object> keys = new ArrayList<>(model.keySet());
        for (int i = 0; i < keys.size(); i++) {
            String key = (String) keys.get(i);
            out.put(key, model.get(key));
            String module = McoreNames.moduleOf(key);
            boolean lastOfModule = i + 1 == keys.size() || !module.equals(McoreNames.moduleOf((String) keys.get(i + 1)));
            if (lastOfModule && McoreNames.isLinear(key)) {
                out.put(module + "._extra_state", null);
            }
        }
        return out;
    }

    @Override
    public void put(ParamSpec spec, HostTensor full) {
        List<Shard> shards = destinations.get(spec.name());
        int tp = plan.layout().tp();
        for (int i = 0; i < shards.size(); i++) {
            Shard s = shards.get(i);
            writers.get(s.file()).writeStorage(s.storageKey(), TpSharding.shardBytes(full, spec.layout(), i % tp, tp));
        }
    }

    @Override
    public void finish() {
        for (Map.Entry<RankFile, TorchSaveWriter> e : writers.entrySet()) {
            e.getValue().finish();
            try {
                channels.get(e.getKey()).force(true);
            } catch (IOException ex) {
                throw new CheckpointException(root + ": sync failed: " + ex, ex);
            }
        }
        close();
        IterationTracker.writeTracker(root, plan.iteration());
    }

    @Override
    public void close() {
        for (FileChannel c : channels.values()) {
            try {
                c.close();
            } catch (IOException ignored) {
                // the caller deletes a failed output
            }
        }
    }
}
