package org.djlmegatron.bridge.megatron;

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
import org.djlmegatron.bridge.BridgeFixtures;
import org.djlmegatron.bridge.LogitsRunner;
import org.djlmegatron.bridge.convert.ParamSpec;
import org.djlmegatron.io.torch.FileSlice;
import org.djlmegatron.io.torch.PyGlobal;
import org.djlmegatron.io.torch.PyObject;
import org.djlmegatron.io.torch.PyTuple;
import org.djlmegatron.io.torch.TorchArchive;
import org.djlmegatron.io.torch.TorchSaveWriter;
import org.djlmegatron.io.torch.TorchTensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Legacy checkpoints as other Megatron setups write them: virtual pipeline chunks ({@code model0},
 * {@code model1}, layers numbered from 0 in each), Transformer Engine's fused norm names and
 * {@code io.BytesIO} extra states. The mcore_gpt fixture rewritten that way still gives
 * Megatron's logits.
 */
class LegacyVariantsTest {

    @TempDir
    Path tmp;

    @Test
    void virtualChunksAndTransformerEngineNamesRead() throws IOException {
        Path fixture = BridgeFixtures.megatron("mcore_gpt");
        Path source = fixture.resolve("torch/iter_0000001/mp_rank_00/model_optim_rng.pt");
        Path root = tmp.resolve("vpp");
        Path file = Files.createDirectories(root.resolve("iter_0000007/mp_rank_00")).resolve("model_optim_rng.pt");
        Files.writeString(root.resolve("latest_checkpointed_iteration.txt"), "7");
        try (FileChannel in = FileChannel.open(source)) {
            TorchArchive a = TorchArchive.open(new FileSlice(source, in, 0, in.size()));
            Map<?, ?> model = (Map<?, ?>) ((Map<?, ?>) a.root()).get("model");
            List<Map<Object, Object>> chunks = List.of(new LinkedHashMap<>(), new LinkedHashMap<>());
            List<TorchTensor> tensors = new ArrayList<>();
            Map<String, byte[]> data = new LinkedHashMap<>();
            for (Map.Entry<?, ?> e : model.entrySet()) {
                String key = (String) e.getKey();
                int layer = ParamSpec.layerOf(key);
                int chunk = layer == 1 || key.startsWith("decoder.final") || key.startsWith("output") ? 1 : 0;
                String local = layer < 0 ? key : ParamSpec.renumber(key, 0, -1)
                        .replace("input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight")
                        .replace("pre_mlp_layernorm.weight", "mlp.linear_fc1.layer_norm_weight");
                if (e.getValue() == null) {
                    // Transformer Engine keeps FP8 metadata as a BytesIO here
                    chunks.get(chunk).put(local, new PyObject(new PyGlobal("io", "BytesIO"), List.of(), PyObject.Creation.NEWOBJ,
                            PyTuple.of(PyObject.called("_codecs.encode", "\u0001\u00ff", "latin1"), 0L, null)));
                    continue;
                }
                TorchTensor t = (TorchTensor) e.getValue();
                TorchTensor copy = TorchTensor.contiguous(Integer.toString(tensors.size()), t.dtype(), t.shape());
                tensors.add(copy);
                data.put(copy.storage().key(), a.readTensor(t));
                chunks.get(chunk).put(local, copy);
            }
            Map<Object, Object> state = new LinkedHashMap<>();
            state.put("model0", chunks.get(0));
            state.put("model1", chunks.get(1));
            state.put("checkpoint_version", 3.0);
            state.put("iteration", 7L);
            try (FileChannel out = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                TorchSaveWriter w = TorchSaveWriter.begin(out, 0, "model_optim_rng", state, tensors, file.toString());
                data.forEach((k, v) -> w.writeStorage(k, ByteBuffer.wrap(v)));
                w.finish();
            }
        }
        Path config = BridgeFixtures.mcoreConfig("mcore_gpt", tmp.resolve("model.json"));
        float[] logits = LogitsRunner.logits(root, config, BridgeFixtures.goldenIds(fixture), 2, 1, false);
        assertThat(BridgeFixtures.maxAbsDiff(logits, BridgeFixtures.goldenLogits(fixture))).isLessThanOrEqualTo(1e-4);
        try (LegacyWeightSource src = LegacyWeightSource.open(root, config)) {
            assertThat(src.iteration()).isEqualTo(7);
        }
    }
}
