package org.djlmegatron.bridge.hf;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.djlmegatron.bridge.BridgeFixtures;
import org.djlmegatron.bridge.CheckpointConverter;
import org.djlmegatron.bridge.CheckpointFormat;
import org.djlmegatron.bridge.LogitsRunner;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.transformer.RopeScaling;
import org.djlmegatron.transformer.RotaryEmbedding;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The llama fixture with Llama 3.1's rope scaling added to a copy of its config: the RoPE tables
 * match the published formula evaluated here in doubles, the logits move, and the scaling
 * survives conversion to Megatron and back.
 */
class RopeScalingTest {

    private static final int HEAD_DIM = 16; // the fixture's head_dim
    private static final double THETA = 10000;

    @TempDir
    Path tmp;

    @Test
    void llama3TablesFollowThePublishedFormula() {
        // original 8192 (Llama 3.1's): the fixture's wavelengths fall in all three bands only partly;
        // original 64 puts two in the blended band and four in the scaled one
        for (RopeScaling s : new RopeScaling[] {RopeScaling.llama3(8, 1, 4, 8192), RopeScaling.llama3(8, 1, 4, 64),
            RopeScaling.llama3(4, 2, 8, 300), RopeScaling.linear(2.5)}) {
            double[] expected = expectedInverseFrequencies(s);
            try (NDManager m = NDManager.newBaseManager()) {
                RotaryEmbedding rope = new RotaryEmbedding(HEAD_DIM, THETA, s);
                float[] inv = rope.inverseFrequencies(m).toFloatArray();
                for (int i = 0; i < inv.length; i++) {
                    assertThat((double) inv[i]).as("%s inv_freq[%d]", s, i)
                            .isCloseTo(expected[i], org.assertj.core.data.Percentage.withPercentage(1e-4));
                }
                int seq = 200;
                NDArray[] tables = rope.tables(m, seq);
                float[] cos = tables[0].toFloatArray();
                float[] sin = tables[1].toFloatArray();
                double worst = 0;
                for (int p = 0; p < seq; p++) {
                    for (int j = 0; j < HEAD_DIM; j++) {
                        double angle = p * expected[j % (HEAD_DIM / 2)];
                        worst = Math.max(worst, Math.abs(cos[p * HEAD_DIM + j] - Math.cos(angle)));
                        worst = Math.max(worst, Math.abs(sin[p * HEAD_DIM + j] - Math.sin(angle)));
                    }
                }
                assertThat(worst).as("%s cos/sin tables", s).isLessThan(2e-5);
            }
        }
    }

    /** Llama 3.1's scaling (transformers' modeling_rope_utils, Meta's reference code), in doubles. */
    private static double[] expectedInverseFrequencies(RopeScaling s) {
        double[] inv = new double[HEAD_DIM / 2];
        for (int i = 0; i < inv.length; i++) {
            double base = 1.0 / Math.pow(THETA, 2.0 * i / HEAD_DIM);
            if (s.type() == RopeScaling.Type.LINEAR) {
                inv[i] = base / s.factor();
                continue;
            }
            double wavelen = 2 * Math.PI / base;
            double lowWavelen = s.originalMaxPositionEmbeddings() / s.lowFreqFactor();
            double highWavelen = s.originalMaxPositionEmbeddings() / s.highFreqFactor();
            if (wavelen < highWavelen) {
                inv[i] = base;
            } else if (wavelen > lowWavelen) {
                inv[i] = base / s.factor();
            } else {
                double smooth = (s.originalMaxPositionEmbeddings() / wavelen - s.lowFreqFactor())
                        / (s.highFreqFactor() - s.lowFreqFactor());
                inv[i] = (1 - smooth) * base / s.factor() + smooth * base;
            }
        }
        return inv;
    }

    @Test
    void bothConfigSpellingsAreRead() throws IOException {
        Path v5 = scaledLlama("v5", "rope_parameters", 8192);
        Path v4 = scaledLlama("v4", "rope_scaling", 8192);
        RopeScaling expected = RopeScaling.llama3(8, 1, 4, 8192);
        assertThat(HfConfig.read(v5).config().ropeScaling()).isEqualTo(expected);
        assertThat(HfConfig.read(v4).config().ropeScaling()).isEqualTo(expected);
        assertThat(HfConfig.read(BridgeFixtures.hf("llama")).config().ropeScaling()).isNull();

        JsonObject both = JsonParser.parseString(Files.readString(v5.resolve("config.json"))).getAsJsonObject();
        JsonObject linear = new JsonObject();
        linear.addProperty("type", "linear");
        linear.addProperty("factor", 2.0);
        both.add("rope_scaling", linear);
        assertThatThrownBy(() -> HfConfig.parse(Path.of("config.json"), both))
                .hasMessageContaining("rope_parameters and rope_scaling disagree");

        JsonObject yarn = config();
        JsonObject params = new JsonObject();
        params.addProperty("rope_type", "yarn");
        params.addProperty("factor", 4.0);
        yarn.add("rope_scaling", params);
        assertThatThrownBy(() -> HfConfig.parse(Path.of("config.json"), yarn))
                .isInstanceOf(HfFormatException.class)
                .hasMessageContaining("rope_scaling.rope_type = yarn is not supported");
        JsonObject noFactor = config();
        JsonObject p2 = new JsonObject();
        p2.addProperty("type", "linear");
        noFactor.add("rope_scaling", p2);
        assertThatThrownBy(() -> HfConfig.parse(Path.of("config.json"), noFactor))
                .hasMessageContaining("rope_scaling.factor must be a number");
    }

    @Test
    void logitsMoveAndTheScalingSurvivesConversionBothWays() throws IOException {
        Path fixture = BridgeFixtures.hf("llama");
        Path scaled = scaledLlama("scaled", "rope_scaling", 8192);
        long[] ids = BridgeFixtures.goldenIds(fixture);
        float[] unscaled = LogitsRunner.logits(fixture, ids, 2, 1, false); // the same arithmetic but for the tables
        float[] logits = LogitsRunner.logits(scaled, ids, 2, 1, false);
        // Llama 3.1's original 8192 leaves all but the two lowest of the fixture's frequencies alone,
        // and those barely turn in 24 positions: a small but real change
        assertThat(BridgeFixtures.maxAbsDiff(logits, unscaled)).as("scaled vs unscaled logits").isGreaterThan(1e-5);
        float[] wide = LogitsRunner.logits(scaledLlama("orig64", "rope_parameters", 64), ids, 2, 1, false);
        assertThat(BridgeFixtures.maxAbsDiff(wide, unscaled)).as("original 64 vs unscaled logits").isGreaterThan(1e-3);
        float[] tp2 = LogitsRunner.logits(scaled, ids, 2, 2, true);
        assertThat(BridgeFixtures.maxAbsDiff(tp2, logits)).as("TP 2 vs TP 1").isLessThan(1e-5);

        Path megatron = convert(scaled, tmp.resolve("megatron"), CheckpointFormat.MEGATRON, new ParallelLayout(2, 1, 1));
        assertThat(BridgeFixtures.maxAbsDiff(LogitsRunner.logits(megatron, ids, 2, 1, false), logits))
                .as("megatron checkpoint logits").isLessThan(1e-5);
        Path back = convert(megatron, tmp.resolve("hf"), CheckpointFormat.HF, ParallelLayout.SINGLE);
        JsonObject written = JsonParser.parseString(Files.readString(back.resolve("config.json"))).getAsJsonObject();
        JsonObject original = JsonParser.parseString(Files.readString(scaled.resolve("config.json"))).getAsJsonObject();
        JsonObject was = original.getAsJsonObject("rope_scaling");
        JsonObject is = written.getAsJsonObject("rope_scaling");
        for (String key : was.keySet()) {
            if (was.get(key).getAsJsonPrimitive().isNumber()) {
                assertThat(is.get(key).getAsDouble()).as("rope_scaling.%s", key).isEqualTo(was.get(key).getAsDouble());
            } else {
                assertThat(is.get(key)).as("rope_scaling.%s", key).isEqualTo(was.get(key));
            }
        }
        assertThat(written.getAsJsonObject("rope_parameters").get("rope_type").getAsString()).isEqualTo("llama3");
        assertThat(HfConfig.read(back).config()).isEqualTo(HfConfig.read(scaled).config());
        assertThat(BridgeFixtures.maxAbsDiff(LogitsRunner.logits(back, ids, 2, 1, false), logits)).isLessThan(1e-6);
    }

    @Test
    void parametersMegatronCannotHoldStayInDjlCheckpointsAndAreRefusedForMegatron() throws IOException {
        Path scaled = scaledLlama("orig64", "rope_parameters", 64);
        assertThatThrownBy(() -> convert(scaled, tmp.resolve("megatron"), CheckpointFormat.MEGATRON,
                ParallelLayout.SINGLE))
                .isInstanceOf(CheckpointException.class)
                .hasMessageContaining("cannot be written as Megatron arguments");
        Path djl = convert(scaled, tmp.resolve("djl"), CheckpointFormat.DJL, new ParallelLayout(2, 1, 1));
        Path back = convert(djl, tmp.resolve("hf"), CheckpointFormat.HF, ParallelLayout.SINGLE);
        assertThat(HfConfig.read(back).config().ropeScaling()).isEqualTo(RopeScaling.llama3(8, 1, 4, 64));
    }

    private static JsonObject config() throws IOException {
        return JsonParser.parseString(Files.readString(BridgeFixtures.hf("llama").resolve("config.json")))
                .getAsJsonObject();
    }

    /** A copy of the llama fixture's config with llama3 scaling under {@code key}; the weights linked. */
    private Path scaledLlama(String name, String key, int originalMax) throws IOException {
        Path dir = Files.createDirectories(tmp.resolve(name));
        JsonObject c = config();
        JsonObject s = key.equals("rope_parameters") ? c.getAsJsonObject("rope_parameters") : new JsonObject();
        s.addProperty("rope_type", "llama3");
        s.addProperty("factor", 8.0);
        s.addProperty("low_freq_factor", 1.0);
        s.addProperty("high_freq_factor", 4.0);
        s.addProperty("original_max_position_embeddings", originalMax);
        if (key.equals("rope_scaling")) {
            c.remove("rope_parameters");
            c.addProperty("rope_theta", THETA);
        }
        c.add(key, s);
        Files.writeString(dir.resolve("config.json"), c.toString());
        Files.createSymbolicLink(dir.resolve("model.safetensors"),
                BridgeFixtures.hf("llama").resolve("model.safetensors"));
        return dir;
    }

    private static Path convert(Path in, Path out, CheckpointFormat to, ParallelLayout layout) {
        CheckpointConverter.convert(CheckpointConverter.Options.builder(in, out, to).layout(layout).build());
        return out;
    }
}
