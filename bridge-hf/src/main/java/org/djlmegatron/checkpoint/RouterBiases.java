package org.djlmegatron.checkpoint;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.convert.RankFile;
import org.djlmegatron.bridge.convert.ReadChecks;
import org.djlmegatron.bridge.djl.DjlMetadata;
import org.djlmegatron.bridge.djl.FileChecksums;
import org.djlmegatron.io.SafetensorsReader;
import org.djlmegatron.io.SafetensorsWriter;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.moe.TopKRouter;
import org.djlmegatron.nn.ShardedParameter;

/**
 * The routers' expert biases (aux-loss-free balancing, {@code --moe-router-enable-expert-bias}):
 * buffers the trainer updates outside the optimizer, equal on every rank. Saved per rank directory
 * in {@code buffers.safetensors} under Megatron's state-dict names,
 * {@code decoder.layers.L.mlp.router.expert_bias} (global layer numbers), so they load at any
 * layout. Megatron also saves {@code local_tokens_per_expert}, the counts gathered since the last
 * update; here the counts of a step are applied at its end, so none are pending at a save.
 */
final class RouterBiases {

    static final String CONTENT = "buffers";
    static final String FILE = "buffers.safetensors";
    private static final String ROUTER_WEIGHT = ".mlp.router.weight";
    private static final String BIAS = ".mlp.router.expert_bias";

    private RouterBiases() {}

    /** Whether any router of these chunks has an expert bias. */
    static boolean any(List<GPTModel> chunks) {
        return !biased(chunks).isEmpty();
    }

    /** Writes {@code rankDir/buffers.safetensors} when any router has an expert bias. */
    static void write(Path rankDir, List<GPTModel> chunks) {
        Map<String, TopKRouter> routers = biased(chunks);
        if (routers.isEmpty()) {
            return;
        }
        try (NDManager m = NDManager.newBaseManager(Device.cpu())) {
            Map<String, NDArray> tensors = new LinkedHashMap<>();
            routers.forEach((key, router) -> tensors.put(key, m.create(router.expertBias())));
            SafetensorsWriter.write(rankDir.resolve(FILE), tensors, Map.of("format", "pt"));
        }
    }

    /** Sets every biased router of {@code chunks} from whichever rank file of the checkpoint holds its layer. */
    static void restore(Path iterDir, DjlMetadata meta, List<GPTModel> chunks, ReadChecks checks) {
        Map<String, TopKRouter> routers = biased(chunks);
        if (routers.isEmpty()) {
            return;
        }
        Map<String, float[]> saved = new LinkedHashMap<>();
        for (RankFile f : RankFile.all(meta.layout())) {
            String rel = f.dirName(meta.layout()) + "/" + FILE;
            Path file = iterDir.resolve(rel);
            if (!Files.isRegularFile(file)) {
                continue;
            }
            if (checks.verifyChecksums()) {
                FileChecksums.verify(iterDir, rel, meta.checksums());
            }
            try (SafetensorsReader r = SafetensorsReader.open(file)) {
                for (String key : r.keys()) {
                    saved.putIfAbsent(key, r.loadFloats(key));
                }
            }
        }
        routers.forEach((key, router) -> {
            float[] bias = saved.get(key);
            if (bias == null) {
                throw new CheckpointException(iterDir + ": no '" + key + "' in any rank's " + FILE + " (saved without "
                        + "--moe-router-enable-expert-bias?); resume with the flags it was saved with");
            }
            checks.requireFinite(iterDir.toString(), key, bias);
            router.restoreExpertBias(bias);
        });
    }

    /** The routers with an expert bias, by their bias's global name, in layer order. */
    private static Map<String, TopKRouter> biased(List<GPTModel> chunks) {
        Map<String, TopKRouter> out = new LinkedHashMap<>();
        for (GPTModel model : chunks) {
            List<String> names = new ArrayList<>();
            for (ShardedParameter p : model.parameters()) {
                if (p.name().endsWith(ROUTER_WEIGHT)) {
                    names.add(p.name().substring(0, p.name().length() - ROUTER_WEIGHT.length()) + BIAS);
                }
            }
            var layers = model.moeLayers();
            for (int i = 0; i < layers.size(); i++) {
                if (layers.get(i).router().expertBias() != null) {
                    out.put(names.get(i), layers.get(i).router());
                }
            }
        }
        return out;
    }
}
