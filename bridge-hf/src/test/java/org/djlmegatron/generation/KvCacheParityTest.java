package org.djlmegatron.generation;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.bridge.BridgeFixtures;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.djlmegatron.transformer.KvCache;

/**
 * Decoding with the KV cache gives the logits of a full forward pass at every step, for every
 * Hugging Face fixture and both Megatron-Core fixtures (torch and torch_dist) at TP=1 and TP=2 (and
 * GPT-2 at TP=4):
 * the golden ids are fed as a 5-token prefill, then one token at a time, and each step's logits are
 * compared with the full forward's at the same positions (1e-5) and with the reference
 * implementation's golden logits (transformers', Megatron-Core's; 1e-4).
 */
class KvCacheParityTest {

    @TempDir
    static Path tmp;

    static Object[][] megatronCases() {
        List<Object[]> out = new ArrayList<>();
        for (String model : new String[] {"mcore_gpt", "mcore_moe"}) {
            for (String format : new String[] {"torch", "torch_dist"}) {
                out.add(new Object[] {model, format, 1});
                out.add(new Object[] {model, format, 2});
            }
        }
        return out.toArray(Object[][]::new);
    }

    @ParameterizedTest(name = "{0} {1} tp={2}")
    @MethodSource("megatronCases")
    void cachedDecodingMatchesMegatronCheckpoints(String name, String format, int tp) throws Exception {
        Path fixture = BridgeFixtures.megatron(name);
        Path config = BridgeFixtures.mcoreConfig(name, tmp.resolve(name + "-" + format + "-" + tp + ".json"));
        check(fixture, fixture.resolve(format), config, tp);
    }

    static Object[][] cases() {
        List<Object[]> out = new ArrayList<>();
        for (String model : BridgeFixtures.HF_MODELS) {
            out.add(new Object[] {model, 1});
            out.add(new Object[] {model, 2});
        }
        out.add(new Object[] {"gpt2", 4}); // its 4 heads allow one per rank
        return out.toArray(Object[][]::new);
    }

    @ParameterizedTest(name = "{0} tp={1}")
    @MethodSource("cases")
    void cachedDecodingMatchesFullForwardAtEveryStep(String name, int tp) {
        check(BridgeFixtures.hf(name), BridgeFixtures.hf(name), null, tp);
    }

    private static void check(Path fixture, Path checkpoint, Path modelConfig, int tp) {
        long[] ids = BridgeFixtures.goldenIds(fixture);
        float[] golden = BridgeFixtures.goldenLogits(fixture);
        int batch = 2;
        int seq = ids.length / batch;
        int prefill = 5;
        try (ModelRanks ranks = ModelRanks.load(checkpoint, modelConfig, tp)) {
            int vocab = ranks.config().vocabSize();
            double[] diffs = ranks.run((ctx, model) -> {
                try (NDManager m = ctx.manager().newSubManager();
                        KvCache cache = new KvCache(m, model.config(), ctx.tensorGroup().size(), batch, seq)) {
                    NDArray x = m.create(ids, new Shape(batch, seq));
                    float[] full = model.gatherLogits(model.apply(x)).toType(DataType.FLOAT32, false).toFloatArray();
                    double vsFull = 0;
                    double vsGolden = 0;
                    for (int from = 0; from < seq; from = from == 0 ? prefill : from + 1) {
                        int to = from == 0 ? prefill : from + 1;
                        NDArray step = x.get(new NDIndex(":, {}:{}", from, to));
                        float[] got = model.gatherLogits(model.forwardCached(step, cache))
                                .toType(DataType.FLOAT32, false).toFloatArray();
                        int width = to - from;
                        for (int b = 0; b < batch; b++) {
                            for (int t = 0; t < width; t++) {
                                for (int v = 0; v < vocab; v++) {
                                    float c = got[(b * width + t) * vocab + v];
                                    int at = (b * seq + from + t) * vocab + v;
                                    vsFull = Math.max(vsFull, Math.abs(c - full[at]));
                                    vsGolden = Math.max(vsGolden, Math.abs(c - golden[at]));
                                }
                            }
                        }
                    }
                    assertThat(cache.length()).isEqualTo(seq);
                    return new double[] {vsFull, vsGolden};
                }
            }, Duration.ofMinutes(5));
            assertThat(diffs[0]).as("cached vs full forward").isLessThanOrEqualTo(1e-5);
            assertThat(diffs[1]).as("cached vs the reference's golden logits").isLessThanOrEqualTo(1e-4);
        }
    }
}
