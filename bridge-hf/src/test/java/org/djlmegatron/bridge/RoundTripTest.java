package org.djlmegatron.bridge;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import org.djlmegatron.bridge.convert.HostTensor;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.bridge.convert.SafetensorsRawReader;
import org.djlmegatron.bridge.export.HfWeightSink;
import org.djlmegatron.bridge.hf.HfConfig;
import org.djlmegatron.io.SafetensorsDType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * For every Hugging Face fixture: HF -> megatron (TP 2, PP 2) -> HF and HF -> megatron-dist -> djl
 * (TP 2, PP 2, EP 2 for MoE) -> HF reproduce every tensor bit for bit, and every intermediate
 * checkpoint gives transformers' logits.
 */
class RoundTripTest {

    @TempDir
    Path tmp;

    static String[] models() {
        return BridgeFixtures.HF_MODELS;
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("models")
    void throughMegatronTorch(String model) {
        Path hf = BridgeFixtures.hf(model);
        Path megatron = convert(hf, tmp.resolve("megatron"), CheckpointFormat.MEGATRON, new ParallelLayout(2, 2, 1));
        assertGoldenLogits(megatron, hf);
        Path back = convert(megatron, tmp.resolve("hf"), CheckpointFormat.HF, ParallelLayout.SINGLE);
        assertSameTensors(back, hf);
        assertThat(HfConfig.read(back).modelType()).isEqualTo(HfConfig.read(hf).modelType());
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("models")
    void throughMegatronDistAndDjl(String model) {
        Path hf = BridgeFixtures.hf(model);
        Path dist = convert(hf, tmp.resolve("dist"), CheckpointFormat.MEGATRON_DIST, ParallelLayout.SINGLE);
        assertGoldenLogits(dist, hf);
        boolean moe = HfConfig.read(hf).config().isMoe();
        Path djl = convert(dist, tmp.resolve("djl"), CheckpointFormat.DJL, new ParallelLayout(2, 2, moe ? 2 : 1));
        assertGoldenLogits(djl, hf);
        Path back = convert(djl, tmp.resolve("hf"), CheckpointFormat.HF, ParallelLayout.SINGLE);
        assertSameTensors(back, hf);
    }

    @Test
    void reshardsExpertsAndRoundsToBf16() {
        Path hf = BridgeFixtures.hf("mixtral");
        Path ep2 = tmp.resolve("ep2");
        CheckpointConverter.convert(new CheckpointConverter.Options(hf, ep2, CheckpointFormat.MEGATRON, null,
                new ParallelLayout(1, 1, 2), SafetensorsDType.BF16, null, null, HfWeightSink.DEFAULT_MAX_SHARD, false,
                null));
        Path tp2pp2 = convert(ep2, tmp.resolve("tp2pp2"), CheckpointFormat.MEGATRON, new ParallelLayout(2, 2, 1));
        Path back = convert(tp2pp2, tmp.resolve("hf"), CheckpointFormat.HF, ParallelLayout.SINGLE);
        try (SafetensorsRawReader a = SafetensorsRawReader.open(back); SafetensorsRawReader e = SafetensorsRawReader.open(hf)) {
            assertThat(a.keys()).containsExactlyInAnyOrderElementsOf(e.keys());
            for (String key : e.keys()) {
                assertThat(a.read(key, null)).as(key).isEqualTo(e.read(key, null).to(SafetensorsDType.BF16));
            }
        }
        assertThat(HfConfig.read(back).modelType()).isEqualTo("mixtral");
    }

    @Test
    void allThreeAxesAndShardedHfFiles() throws Exception {
        Path hf = BridgeFixtures.hf("qwen3_moe");
        Path megatron = convert(hf, tmp.resolve("megatron"), CheckpointFormat.MEGATRON, new ParallelLayout(2, 2, 2));
        assertThat(megatron.resolve("release/mp_rank_01_001_001/model_optim_rng.pt")).exists();
        Path sharded = tmp.resolve("sharded");
        CheckpointConverter.convert(new CheckpointConverter.Options(megatron, sharded, CheckpointFormat.HF, null,
                ParallelLayout.SINGLE, null, null, null, 200_000, false, null));
        assertThat(sharded.resolve("model.safetensors.index.json")).exists();
        try (java.util.stream.Stream<Path> files = java.nio.file.Files.list(sharded)) {
            assertThat(files.filter(f -> f.getFileName().toString().matches("model-\\d{5}-of-\\d{5}\\.safetensors")))
                    .hasSizeGreaterThan(2);
        }
        assertGoldenLogits(sharded, hf);
        Path back = convert(sharded, tmp.resolve("hf"), CheckpointFormat.HF, ParallelLayout.SINGLE);
        assertSameTensors(back, hf);
    }

    static Path convert(Path in, Path out, CheckpointFormat to, ParallelLayout layout) {
        CheckpointConverter.convert(new CheckpointConverter.Options(in, out, to, null, layout, null, null, null,
                HfWeightSink.DEFAULT_MAX_SHARD, false, null));
        return out;
    }

    static void assertGoldenLogits(Path checkpoint, Path hfFixture) {
        long[] ids = BridgeFixtures.goldenIds(hfFixture);
        float[] logits = LogitsRunner.logits(checkpoint, null, ids, 2, 2, false);
        assertThat(BridgeFixtures.maxAbsDiff(logits, BridgeFixtures.goldenLogits(hfFixture)))
                .as("max |logits - golden| of " + checkpoint).isLessThanOrEqualTo(1e-4);
    }

    static void assertSameTensors(Path actual, Path expected) {
        try (SafetensorsRawReader a = SafetensorsRawReader.open(actual);
                SafetensorsRawReader e = SafetensorsRawReader.open(expected)) {
            assertThat(a.keys()).containsExactlyInAnyOrderElementsOf(e.keys());
            for (String key : e.keys()) {
                HostTensor x = a.read(key, null);
                HostTensor y = e.read(key, null);
                assertThat(x.dtype()).as(key).isEqualTo(y.dtype());
                assertThat(x.shape()).as(key).containsExactly(y.shape());
                assertThat(x.data()).as(key + " bytes").isEqualTo(y.data());
            }
            assertThat(a.info(e.keys().iterator().next()).file().getFileName().toString())
                    .isEqualTo("model.safetensors");
        }
    }
}
