package org.djlmegatron.bridge;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.io.torch.FileSlice;
import org.djlmegatron.io.torch.PyObject;
import org.djlmegatron.io.torch.TorchArchive;
import org.djlmegatron.io.torch.TorchSaveWriter;
import org.djlmegatron.io.torch.TorchTensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Megatron legacy checkpoints written with {@code --moe-grouped-gemm}: {@code GroupedMLP} keeps a
 * layer's local experts in {@code mlp.experts.weight1} [hidden, E x F1] and {@code weight2}
 * [E x F2, hidden], which its forward views as [E, hidden, F1] and [E, F2, hidden] (Megatron-Core
 * {@code experts.py}). No fixture was made by Megatron with grouped GEMM, so this test builds one:
 * the mixtral fixture converted to Megatron's per-expert layout at TP 2 x EP 2, then each rank
 * file rewritten here with every layer's experts stacked as Megatron defines them (expert e's
 * block of the view is the transpose of its {@code linear_fc1}/{@code linear_fc2} weight) and
 * {@code args.moe_grouped_gemm = True}. Read back, it gives transformers' golden logits and the
 * fixture's tensors bit for bit. What it cannot show: that a file Megatron wrote has no other
 * difference from this construction.
 */
class GroupedGemmCheckpointTest {

    private static final Pattern EXPERT = Pattern.compile(
            "(decoder\\.layers\\.\\d+\\.mlp\\.experts\\.)local_experts\\.(\\d+)\\.linear_fc([12])\\.weight");

    @TempDir
    Path tmp;

    @Test
    void groupedGemmExpertsReadAsMegatronLaysThemOut() throws IOException {
        Path hf = BridgeFixtures.hf("mixtral");
        Path perExpert = RoundTripTest.convert(hf, tmp.resolve("per-expert"), CheckpointFormat.MEGATRON,
                new ParallelLayout(2, 1, 2));
        Path grouped = tmp.resolve("grouped");
        int files = 0;
        try (Stream<Path> all = Files.walk(perExpert)) {
            for (Path f : all.filter(p -> p.getFileName().toString().equals("model_optim_rng.pt")).toList()) {
                Path out = grouped.resolve(perExpert.relativize(f));
                Files.createDirectories(out.getParent());
                regroup(f, out);
                files++;
            }
        }
        assertThat(files).isEqualTo(4);
        Files.copy(perExpert.resolve("latest_checkpointed_iteration.txt"), grouped.resolve("latest_checkpointed_iteration.txt"));
        RoundTripTest.assertGoldenLogits(grouped, hf);
        Path back = RoundTripTest.convert(grouped, tmp.resolve("hf"), CheckpointFormat.HF, ParallelLayout.SINGLE);
        RoundTripTest.assertSameTensors(back, hf);
    }

    /** Rewrites one rank file with each layer's local experts as {@code weight1}/{@code weight2}. */
    private static void regroup(Path in, Path out) throws IOException {
        try (FileChannel ch = FileChannel.open(in, StandardOpenOption.READ)) {
            TorchArchive a = TorchArchive.open(new FileSlice(in, ch, 0, ch.size()));
            Map<?, ?> root = (Map<?, ?>) a.root();
            Map<?, ?> model = (Map<?, ?>) root.get("model");
            Map<Object, Object> newModel = new LinkedHashMap<>();
            Map<String, TreeMap<Integer, TorchTensor>> groups = new LinkedHashMap<>();
            for (Map.Entry<?, ?> e : model.entrySet()) {
                String key = (String) e.getKey();
                Matcher m = EXPERT.matcher(key);
                if (m.matches()) {
                    String grouped = m.group(1) + "weight" + m.group(3);
                    groups.computeIfAbsent(grouped, k -> new TreeMap<>()).put(Integer.parseInt(m.group(2)),
                            (TorchTensor) e.getValue());
                    newModel.putIfAbsent(grouped, null); // placed where the experts were
                } else if (!(key.contains(".local_experts.") && key.endsWith("._extra_state"))) {
                    newModel.put(key, e.getValue());
                }
            }
            assertThat(groups).isNotEmpty();
            List<TorchTensor> tensors = new ArrayList<>();
            Map<String, byte[]> data = new LinkedHashMap<>();
            for (Map.Entry<Object, Object> e : newModel.entrySet()) {
                String key = (String) e.getKey();
                if (!groups.containsKey(key) && !(e.getValue() instanceof TorchTensor)) {
                    continue; // an _extra_state: None
                }
                TorchTensor source = groups.containsKey(key) ? groups.get(key).firstEntry().getValue() : (TorchTensor) e.getValue();
                byte[] bytes = groups.containsKey(key) ? stack(a, groups.get(key))
                        : a.readTensor(source);
                long[] shape = groups.containsKey(key) ? groupedShape(source.shape(), groups.get(key).size(),
                        key.endsWith("weight1")) : source.shape();
                String storage = Integer.toString(tensors.size());
                TorchTensor t = TorchTensor.contiguous(storage, source.dtype(), shape);
                tensors.add(t);
                data.put(storage, bytes);
                e.setValue(t);
            }
            Map<Object, Object> fields = new LinkedHashMap<>(((PyObject) root.get("args")).fields());
            fields.put("moe_grouped_gemm", true);
            Map<Object, Object> newRoot = new LinkedHashMap<>(root);
            newRoot.put("args", PyObject.withFields("argparse.Namespace", stringKeys(fields)));
            newRoot.put("model", newModel);
            try (FileChannel w = FileChannel.open(out, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                TorchSaveWriter writer = TorchSaveWriter.begin(w, 0, "model_optim_rng", newRoot, tensors, out.toString());
                data.forEach((k, v) -> writer.writeStorage(k, ByteBuffer.wrap(v)));
                writer.finish();
            }
        }
    }

    /** weight1: [hidden, E F1] (each expert's fc1 [F1, hidden] transposed); weight2: [E F2, hidden] (fc2 [hidden, F2] transposed). */
    private static long[] groupedShape(long[] perExpert, int experts, boolean fc1) {
        return fc1 ? new long[] {perExpert[1], experts * perExpert[0]} : new long[] {experts * perExpert[1], perExpert[0]};
    }

    /** Megatron's memory order: expert e's transposed weight is the e-th contiguous block. */
    private static byte[] stack(TorchArchive a, TreeMap<Integer, TorchTensor> experts) {
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
        for (TorchTensor t : experts.values()) {
            byte[] w = a.readTensor(t);
            int size = t.dtype().elementSize();
            int rows = (int) t.shape()[0];
            int cols = (int) t.shape()[1];
            byte[] transposed = new byte[w.length];
            for (int r = 0; r < rows; r++) {
                for (int c = 0; c < cols; c++) {
                    System.arraycopy(w, (r * cols + c) * size, transposed, (c * rows + r) * size, size);
                }
            }
            out.writeBytes(transposed);
        }
        return out.toByteArray();
    }

    private static Map<String, Object> stringKeys(Map<Object, Object> fields) {
        Map<String, Object> out = new LinkedHashMap<>();
        fields.forEach((k, v) -> out.put(String.valueOf(k), v));
        return out;
    }
}
