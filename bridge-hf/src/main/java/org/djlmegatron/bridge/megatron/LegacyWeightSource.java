package org.djlmegatron.bridge.megatron;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.stream.Stream;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.convert.HostTensor;
import org.djlmegatron.bridge.convert.ModelParams;
import org.djlmegatron.bridge.convert.ParamSpec;
import org.djlmegatron.bridge.convert.RankFile;
import org.djlmegatron.bridge.convert.TpSharding;
import org.djlmegatron.bridge.convert.WeightSource;
import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.io.torch.FileSlice;
import org.djlmegatron.io.torch.PyObject;
import org.djlmegatron.io.torch.TorchArchive;
import org.djlmegatron.io.torch.TorchTensor;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Megatron-LM's legacy {@code torch} checkpoint: {@code iter_XXXXXXX/mp_rank_TT[_PPP][_EEE]/}
 * {@code model_optim_rng.pt}, one {@code torch.save} archive per model-parallel rank holding
 * {@code model} (or {@code model0}, {@code model1}, ... with virtual pipeline stages), {@code
 * args}, {@code iteration} and {@code checkpoint_version}. Layers and experts are numbered
 * locally in each file; this source renumbers them globally (from the files' own contents, so
 * uneven pipeline splits read too) and joins tensor-parallel shards. {@code _extra_state}
 * entries are skipped; Transformer Engine's fused norm names are understood; grouped-GEMM experts
 * ({@code mlp.experts.weight1/weight2}, {@link GroupedExperts}) are split into their per-expert weights.
 */
public final class LegacyWeightSource implements WeightSource {

    public static final String FILE = "model_optim_rng.pt";

    /** One rank's stored shard of a parameter ({@code part}: which expert of a grouped-GEMM tensor, or null). */
    private record Stored(TorchArchive archive, TorchTensor tensor, String key, GroupedExperts part) {

        long[] shape() {
            return part == null ? tensor.shape() : part.shape(tensor.shape(), archive.describe() + " " + key);
        }

        HostTensor read() {
            HostTensor whole = new HostTensor(tensor.dtype(), tensor.shape(), archive.readTensor(tensor));
            return part == null ? whole : part.extract(whole, archive.describe() + " " + key);
        }
    }

    private record RankArchive(RankFile rank, TorchArchive archive, Map<?, ?> root) {}

    private final Path dir;
    private final TransformerConfig config;
    private final long iteration;
    private final int tp;
    private final Map<String, Stored[]> shards;
    private final Map<String, ParamSpec> specs;
    private final List<FileChannel> channels;

    private LegacyWeightSource(Path dir, TransformerConfig config, long iteration, int tp,
            Map<String, Stored[]> shards, List<FileChannel> channels) {
        this.dir = dir;
        this.config = config;
        this.iteration = iteration;
        this.tp = tp;
        this.shards = shards;
        this.channels = channels;
        this.specs = new HashMap<>();
        ModelParams.of(config).forEach(s -> specs.put(s.name(), s));
    }

    /** Whether {@code iterationDir} holds legacy rank files. */
    public static boolean holdsRankFiles(Path iterationDir) {
        try (Stream<Path> s = Files.list(iterationDir)) {
            return s.anyMatch(p -> RankFile.parse(p.getFileName().toString()) != null
                    && Files.isRegularFile(p.resolve(FILE)));
        } catch (IOException e) {
            return false;
        }
    }

    /**
     * Opens every rank file of a checkpoint and checks that together they hold each parameter of
     * the model exactly once per tensor-parallel rank, with the right shard shapes.
     *
     * @param path the checkpoint root (with the tracker) or an iteration directory
     * @param modelConfig a JSON file of Megatron arguments, used when the checkpoint has no
     *     {@code args}; may be null
     */
    public static LegacyWeightSource open(Path path, Path modelConfig) {
        Path dir = IterationTracker.iterationDir(path);
        List<FileChannel> channels = new ArrayList<>();
        try {
            Map<String, RankArchive> byName = new TreeMap<>();
            try (Stream<Path> s = Files.list(dir)) {
                for (Path p : s.sorted().toList()) {
                    int[] nums = RankFile.parse(p.getFileName().toString());
                    Path file = p.resolve(FILE);
                    if (nums != null && Files.isRegularFile(file)) {
                        FileChannel ch = FileChannel.open(file, StandardOpenOption.READ);
                        channels.add(ch);
                        TorchArchive a = TorchArchive.open(new FileSlice(file, ch, 0, ch.size()));
                        if (!(a.root() instanceof Map<?, ?> root)) {
                            throw new CheckpointException(file + ": the pickled object is not a dict");
                        }
                        byName.put(p.getFileName().toString(), new RankArchive(null, a, root));
                    }
                }
            }
            if (byName.isEmpty()) {
                throw new CheckpointException(dir + ": no mp_rank_*/" + FILE + " files");
            }
            RankArchive first = byName.values().iterator().next();
            Object args = first.root().get("args");
            checkVersion(first);
            List<RankArchive> ranks = resolveRanks(byName, args instanceof PyObject a ? a : null);
            TransformerConfig config = config(first, args, modelConfig);
            long iteration = first.root().get("iteration") instanceof Long it ? it : IterationTracker.iterationOf(dir);
            int tp = ranks.stream().mapToInt(r -> r.rank().tp()).max().getAsInt() + 1;
            Map<String, Stored[]> shards = index(ranks, config, tp);
            LegacyWeightSource src = new LegacyWeightSource(dir, config, iteration, tp, shards, channels);
            src.checkComplete();
            return src;
        } catch (IOException e) {
            closeAll(channels);
            throw new CheckpointException(dir + ": cannot read: " + e, e);
        } catch (RuntimeException e) {
            closeAll(channels);
            throw e;
        }
    }

    private static void checkVersion(RankArchive first) {
        Object v = first.root().get("checkpoint_version");
        if (v instanceof Number n && n.doubleValue() < 3.0) {
            throw new CheckpointException(first.archive().describe() + ": checkpoint_version " + v
                    + " predates Megatron-Core's layout (3.0); only version 3 checkpoints are read");
        }
    }

    private static TransformerConfig config(RankArchive first, Object args, Path modelConfig) {
        if (args instanceof PyObject ns) {
            Object etp = ns.fields().get("expert_tensor_parallel_size");
            Object tp = ns.fields().get("tensor_model_parallel_size");
            if (etp != null && ns.fields().get("num_experts") != null && !etp.equals(tp)) {
                throw new CheckpointException(first.archive().describe() + ": args.expert_tensor_parallel_size = " + etp
                        + " differs from tensor_model_parallel_size = " + tp + "; experts split differently from the "
                        + "rest are not supported");
            }
            return MegatronConfig.fromArgs(ns, first.archive().describe());
        }
        if (modelConfig != null) {
            return MegatronConfig.fromFile(modelConfig);
        }
        throw new CheckpointException(first.archive().describe() + ": the checkpoint has no 'args' to take the "
                + "model config from; pass --model-config with a JSON file of Megatron arguments "
                + "(see docs/checkpoints.md)");
    }

    /** Assigns (tp, pp, ep) to every file; {@code mp_rank_TT_XXX} is a stage or an expert rank. */
    private static List<RankArchive> resolveRanks(Map<String, RankArchive> byName, PyObject args) {
        boolean twoNumbersArePipeline = true;
        for (Map.Entry<String, RankArchive> e : byName.entrySet()) {
            int[] n = RankFile.parse(e.getKey());
            if (n.length == 2 && n[1] > 0) {
                if (args != null && args.fields().get("expert_model_parallel_size") instanceof Long ep
                        && args.fields().get("pipeline_model_parallel_size") instanceof Long pp) {
                    twoNumbersArePipeline = !(ep > 1 && pp == 1);
                } else {
                    // expert ranks repeat the embedding; later pipeline stages never hold it
                    twoNumbersArePipeline = modelDicts(e.getValue()).values().stream()
                            .noneMatch(m -> m.containsKey("embedding.word_embeddings.weight"));
                }
                break;
            }
        }
        List<RankArchive> out = new ArrayList<>();
        for (Map.Entry<String, RankArchive> e : byName.entrySet()) {
            int[] n = RankFile.parse(e.getKey());
            RankFile r = switch (n.length) {
                case 1 -> new RankFile(n[0], 0, 0);
                case 2 -> twoNumbersArePipeline ? new RankFile(n[0], n[1], 0) : new RankFile(n[0], 0, n[1]);
                default -> new RankFile(n[0], n[1], n[2]);
            };
            out.add(new RankArchive(r, e.getValue().archive(), e.getValue().root()));
        }
        int tp = out.stream().mapToInt(r -> r.rank().tp()).max().getAsInt() + 1;
        int pp = out.stream().mapToInt(r -> r.rank().pp()).max().getAsInt() + 1;
        int ep = out.stream().mapToInt(r -> r.rank().ep()).max().getAsInt() + 1;
        if (out.size() != tp * pp * ep) {
            throw new CheckpointException(out.get(0).archive().describe() + ": found " + out.size()
                    + " rank files, a tp=" + tp + " pp=" + pp + " ep=" + ep + " checkpoint has " + tp * pp * ep);
        }
        return out;
    }

    /** {@code model}, or {@code model0..modelN} for virtual pipeline stages, by chunk index. */
    private static Map<Integer, Map<?, ?>> modelDicts(RankArchive r) {
        Map<Integer, Map<?, ?>> out = new TreeMap<>();
        if (r.root().get("model") instanceof Map<?, ?> m) {
            out.put(0, m);
        }
        for (int v = 0; r.root().get("model" + v) instanceof Map<?, ?> m; v++) {
            out.put(v, m);
        }
        if (out.isEmpty()) {
            throw new CheckpointException(r.archive().describe() + ": no 'model' (or 'model0') state dict");
        }
        return out;
    }

    /** Every stored shard by global name, tensor-parallel rank order. */
    private static Map<String, Stored[]> index(List<RankArchive> ranks, TransformerConfig config, int tp) {
        int ep = ranks.stream().mapToInt(r -> r.rank().ep()).max().getAsInt() + 1;
        int pp = ranks.stream().mapToInt(r -> r.rank().pp()).max().getAsInt() + 1;
        int expertsPerRank = config.isMoe() ? config.numExperts() / ep : 0;
        if (config.isMoe() && config.numExperts() % ep != 0) {
            throw new CheckpointException(ranks.get(0).archive().describe() + ": " + ep + " expert ranks do not divide "
                    + config.numExperts() + " experts");
        }
        Map<String, Integer> layerOffset = layerOffsets(ranks, pp, config);
        Map<String, Stored[]> out = new HashMap<>();
        Set<String> known = new HashSet<>();
        ModelParams.of(config).forEach(s -> known.add(s.name()));
        for (RankArchive r : ranks) {
            for (Map.Entry<Integer, Map<?, ?>> chunk : modelDicts(r).entrySet()) {
                int offset = layerOffset.get(r.rank().pp() + "/" + chunk.getKey());
                for (Map.Entry<?, ?> e : chunk.getValue().entrySet()) {
                    String key = String.valueOf(e.getKey());
                    if (key.endsWith("._extra_state")) {
                        continue; // kept by Megatron for FP8 metadata; nothing the weights need
                    }
                    if (!(e.getValue() instanceof TorchTensor t)) {
                        throw new CheckpointException(r.archive().describe() + ": model entry '" + key
                                + "' is not a tensor");
                    }
                    if (GroupedExperts.isGrouped(key)) { // --moe-grouped-gemm: every local expert in one tensor
                        for (int x = 0; x < expertsPerRank; x++) {
                            GroupedExperts part = GroupedExperts.of(key, x, expertsPerRank);
                            String name = globalName(part.expertKey(key), offset, r.rank().ep() * expertsPerRank);
                            store(out, name, r, t, key, part, tp);
                        }
                        continue;
                    }
                    String name = globalName(key, offset, r.rank().ep() * expertsPerRank);
                    if (ParamSpec.expertOf(name) < 0 && r.rank().ep() > 0) {
                        continue; // every expert rank repeats the non-expert parameters
                    }
                    if (config.tieEmbeddings() && name.equals("output_layer.weight") && r.rank().pp() > 0) {
                        continue; // the last stage's copy of the tied embedding
                    }
                    if (!known.contains(name)) {
                        throw new CheckpointException(r.archive().describe() + ": tensor '" + key + "' (" + name
                                + ") is not a parameter of the model the config describes (" + config.numLayers()
                                + " layers" + (config.isMoe() ? ", " + config.numExperts() + " experts" : "") + ")");
                    }
                    store(out, name, r, t, key, null, tp);
                }
            }
        }
        return out;
    }

    private static void store(Map<String, Stored[]> out, String name, RankArchive r, TorchTensor t, String key,
            GroupedExperts part, int tp) {
        Stored[] slot = out.computeIfAbsent(name, k -> new Stored[tp]);
        if (slot[r.rank().tp()] != null) {
            throw new CheckpointException(r.archive().describe() + ": tensor '" + name
                    + "' is stored twice for tensor-parallel rank " + r.rank().tp());
        }
        slot[r.rank().tp()] = new Stored(r.archive(), t, key, part);
    }

    /** Global number of each (stage, virtual chunk)'s first layer: chunks run virtual-major. */
    private static Map<String, Integer> layerOffsets(List<RankArchive> ranks, int pp, TransformerConfig config) {
        Map<Integer, Map<Integer, Integer>> counts = new TreeMap<>(); // virtual -> stage -> layers
        for (RankArchive r : ranks) {
            if (r.rank().tp() != 0 || r.rank().ep() != 0) {
                continue;
            }
            for (Map.Entry<Integer, Map<?, ?>> chunk : modelDicts(r).entrySet()) {
                TreeSet<Integer> layers = new TreeSet<>();
                for (Object k : chunk.getValue().keySet()) {
                    int l = ParamSpec.layerOf(String.valueOf(k));
                    if (l >= 0) {
                        layers.add(l);
                    }
                }
                int n = layers.isEmpty() ? 0 : layers.last() + 1;
                counts.computeIfAbsent(chunk.getKey(), v -> new TreeMap<>()).put(r.rank().pp(), n);
            }
        }
        Map<String, Integer> offsets = new HashMap<>();
        int next = 0;
        for (Map.Entry<Integer, Map<Integer, Integer>> v : counts.entrySet()) {
            for (int stage = 0; stage < pp; stage++) {
                offsets.put(stage + "/" + v.getKey(), next);
                next += v.getValue().getOrDefault(stage, 0);
            }
        }
        if (next != config.numLayers()) {
            throw new CheckpointException(ranks.get(0).archive().describe() + ": the stage files hold " + next
                    + " layers, the config says num_layers = " + config.numLayers());
        }
        return offsets;
    }

    private static String globalName(String key, int layerOffset, int expertOffset) {
        int layer = ParamSpec.layerOf(key);
        if (layer < 0) {
            return key;
        }
        String plain = "decoder.layers." + layer + "." + McoreNames.plain(ParamSpec.layerPart(key));
        int expert = ParamSpec.expertOf(plain);
        return ParamSpec.renumber(plain, layer + layerOffset, expert < 0 ? -1 : expert + expertOffset);
    }

    private void checkComplete() {
        for (ParamSpec s : specs.values()) {
            Stored[] slot = shards.get(s.name());
            long[] expected = TpSharding.shardShape(s.shape(), s.layout(), tp);
            for (int r = 0; r < tp; r++) {
                if (slot == null || slot[r] == null) {
                    throw new CheckpointException(dir + ": tensor '" + s.name() + "' is missing for tensor-parallel rank "
                            + r + " (the config implies it)");
                }
                if (!Arrays.equals(slot[r].shape(), expected)) {
                    throw new CheckpointException(slot[r].archive().describe() + ": tensor '" + slot[r].key()
                            + "' has shape " + Arrays.toString(slot[r].shape()) + ", expected "
                            + Arrays.toString(expected) + " (" + s.name() + " " + Arrays.toString(s.shape())
                            + " split " + tp + " ways, " + s.layout() + ")");
                }
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
        return shards.get(spec.name())[0].tensor().dtype();
    }

    @Override
    public HostTensor read(ParamSpec spec) {
        Stored[] slot = shards.get(spec.name());
        List<HostTensor> parts = new ArrayList<>(tp);
        for (Stored s : slot) {
            parts.add(s.read());
        }
        return TpSharding.assemble(parts, spec.layout());
    }

    @Override
    public String describe() {
        return dir.toString();
    }

    @Override
    public void close() {
        closeAll(channels);
    }

    private static void closeAll(List<FileChannel> channels) {
        for (FileChannel c : channels) {
            try {
                c.close();
            } catch (IOException ignored) {
                // read-only
            }
        }
    }
}
