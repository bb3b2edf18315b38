package org.djlmegatron.bridge.hf;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.pytorch.jni.JniUtils;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.io.SafetensorsReader;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.parallel.RankGrid;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/** Logits of the six HF fixtures against transformers' own, at every supported TP size. */
class HfGoldenLogitsTest {

    static Stream<Arguments> cases() {
        List<Arguments> out = new ArrayList<>();
        for (String m : Fixtures.HF_MODELS) {
            out.add(Arguments.of(m, 1, false));
            out.add(Arguments.of(m, 2, false));
            out.add(Arguments.of(m, 2, true));
        }
        out.add(Arguments.of("gpt2", 4, false));
        out.add(Arguments.of("gpt2", 4, true));
        return out.stream();
    }

    @ParameterizedTest(name = "{0} tp={1} sp={2}")
    @MethodSource("cases")
    void logitsMatchTransformers(String model, int tp, boolean sp) {
        float[] golden;
        long[] ids;
        try (SafetensorsReader g = SafetensorsReader.open(Fixtures.hf(model).resolve("golden.safetensors"))) {
            golden = g.loadFloats("logits");
            ids = g.loadLongs("input_ids");
        }
        List<float[]> logits;
        try (HfCheckpoint ckpt = HfCheckpoint.open(Fixtures.hf(model))) {
            logits = LocalWorld.run(RankGrid.create(tp, tp, 1, 1, 1), ctx -> {
                JniUtils.setGradMode(false);
                GPTModel gpt = new GPTModel(ctx, ckpt.config(), sp);
                ckpt.loadInto(gpt);
                NDManager m = ctx.manager();
                NDArray input = m.create(ids, new ai.djl.ndarray.types.Shape(2, ids.length / 2));
                return gpt.gatherLogits(gpt.apply(input)).toFloatArray();
            });
        }
        for (float[] rank : logits) {
            assertThat(rank).hasSameSizeAs(golden);
            assertThat(maxAbsDiff(rank, golden)).as("max |logits - golden|").isLessThanOrEqualTo(1e-4);
        }
    }

    static double maxAbsDiff(float[] a, float[] b) {
        double max = 0;
        for (int i = 0; i < a.length; i++) {
            max = Math.max(max, Math.abs(a[i] - b[i]));
        }
        return max;
    }
}
