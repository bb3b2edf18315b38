package org.djlmegatron.io.torch;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.djlmegatron.io.SafetensorsDType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Megatron's torch_dist checkpoints (PyTorch DCP): the fixtures, and our writer's output. */
class DcpCheckpointTest {

    @TempDir
    Path tmp;

    @Test
    void layersOfTheDistCheckpointEqualTheLegacyTensorsBitForBit() throws IOException {
        Path legacy = TorchFixtures.legacyFile("mcore_moe");
        try (DcpCheckpoint dist = DcpCheckpoint.open(TorchFixtures.distDir("mcore_moe"));
                FileChannel ch = TorchFixtures.read(legacy)) {
            TorchArchive a = TorchArchive.open(TorchFixtures.whole(legacy, ch));
            Map<?, ?> model = (Map<?, ?>) ((Map<?, ?>) a.root()).get("model");
            DcpTensor qkv = dist.tensors().get("decoder.layers.self_attention.linear_qkv.weight");
            assertThat(qkv.size()).containsExactly(2, 128, 64);
            assertThat(dist.read(qkv.key(), new long[] {1, 0, 0}, new long[] {1, 128, 64}))
                    .isEqualTo(a.readTensor((TorchTensor) model.get("decoder.layers.1.self_attention.linear_qkv.weight")));
            // gate and up halves are separate chunks; one read spans both
            byte[] fc1 = dist.read("decoder.layers.mlp.experts.experts.linear_fc1.weight",
                    new long[] {0, 3, 0, 0}, new long[] {1, 1, 96, 64});
            assertThat(fc1).isEqualTo(a.readTensor(
                    (TorchTensor) model.get("decoder.layers.0.mlp.experts.local_experts.3.linear_fc1.weight")));
            byte[] norm = dist.read("decoder.layers.mlp.linear_fc1.layer_norm_weight", new long[] {1, 0},
                    new long[] {1, 64});
            assertThat(norm).isEqualTo(a.readTensor((TorchTensor) model.get("decoder.layers.1.pre_mlp_layernorm.weight")));
            assertThat(dist.readObject("common_state/shard_0_1")).isEqualTo(List.of(Map.of()));
            assertThat(dist.objectKeys()).contains("decoder.layers.self_attention.linear_qkv._extra_state/shard_0_2");
        }
    }

    @Test
    void writtenCheckpointReadsBackAcrossChunkBoundaries() {
        Path dir = tmp.resolve("iter_0000001");
        dir.toFile().mkdirs();
        float[] full = new float[3 * 4 * 5];
        for (int i = 0; i < full.length; i++) {
            full[i] = i;
        }
        try (DcpCheckpointWriter w = DcpCheckpointWriter.create(dir)) {
            for (int layer = 0; layer < 3; layer++) {
                w.writeChunk("decoder.layers.w", SafetensorsDType.F32, new long[] {3, 4, 5},
                        new long[] {layer, 0, 0}, new long[] {1, 4, 5}, floats(full, layer * 20, 20));
            }
            Map<Object, Object> common = new LinkedHashMap<>();
            common.put("iteration", 7L);
            w.writeObject("common_state/shard_0_1", List.of(common));
            w.finish(dir.toString());
        }
        try (DcpCheckpoint r = DcpCheckpoint.open(dir)) {
            assertThat(r.tensors().get("decoder.layers.w").chunks()).hasSize(3);
            byte[] all = r.read("decoder.layers.w", new long[] {0, 0, 0}, new long[] {3, 4, 5});
            assertThat(all).isEqualTo(floats(full, 0, 60).array());
            byte[] box = r.read("decoder.layers.w", new long[] {1, 2, 1}, new long[] {2, 1, 3});
            ByteBuffer b = ByteBuffer.wrap(box).order(ByteOrder.LITTLE_ENDIAN);
            assertThat(b.getFloat(0)).isEqualTo(20 + 10 + 1);
            assertThat(b.getFloat(4 * 3)).isEqualTo(40 + 10 + 1);
            assertThat(r.readObject("common_state/shard_0_1")).isEqualTo(List.of(Map.of("iteration", 7L)));
        }
    }

    @Test
    void missingChunksAreReported() {
        Path dir = tmp.resolve("partial");
        dir.toFile().mkdirs();
        try (DcpCheckpointWriter w = DcpCheckpointWriter.create(dir)) {
            w.writeChunk("t", SafetensorsDType.F32, new long[] {2, 2}, new long[] {0, 0}, new long[] {1, 2},
                    floats(new float[] {1, 2}, 0, 2));
            w.finish(dir.toString());
        }
        try (DcpCheckpoint r = DcpCheckpoint.open(dir)) {
            assertThatThrownBy(() -> r.read("t", new long[] {0, 0}, new long[] {2, 2}))
                    .hasMessageContaining("cover 2 of the 4 elements");
        }
    }

    private static ByteBuffer floats(float[] v, int from, int n) {
        ByteBuffer b = ByteBuffer.allocate(4 * n).order(ByteOrder.LITTLE_ENDIAN);
        b.asFloatBuffer().put(Arrays.copyOfRange(v, from, from + n));
        return b;
    }
}
