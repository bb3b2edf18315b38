package org.djlmegatron.bridge.hf;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.djlmegatron.bridge.LogitsRunner;
import org.djlmegatron.bridge.convert.ReadChecks;
import org.djlmegatron.io.SafetensorsReader;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * {@code logits --pp 2}: the six HF fixtures' two layers on two stages (one each), the rows as
 * micro-batches of the forward-only schedule; the last stage's logits against transformers' own,
 * at the tolerance of {@link HfGoldenLogitsTest}.
 */
class PipelinedLogitsTest {

    static Stream<Arguments> cases() {
        List<Arguments> out = new ArrayList<>();
        for (String m : Fixtures.HF_MODELS) {
            out.add(Arguments.of(m, 1, 1, false));
            out.add(Arguments.of(m, 2, 1, true));
        }
        out.add(Arguments.of("gpt2", 2, 1, false));
        out.add(Arguments.of("mixtral", 1, 2, false));
        out.add(Arguments.of("qwen3_moe", 2, 2, true));
        return out.stream();
    }

    @ParameterizedTest(name = "{0} pp=2 tp={1} ep={2} sp={3}")
    @MethodSource("cases")
    void lastStageLogitsMatchTransformers(String model, int tp, int ep, boolean sp) {
        float[] golden;
        long[] ids;
        try (SafetensorsReader g = SafetensorsReader.open(Fixtures.hf(model).resolve("golden.safetensors"))) {
            golden = g.loadFloats("logits");
            ids = g.loadLongs("input_ids");
        }
        float[] logits = LogitsRunner.logits(Fixtures.hf(model), null, ReadChecks.ALL, ids, 2, tp, ep, 2, sp);
        assertThat(logits).hasSameSizeAs(golden);
        assertThat(HfGoldenLogitsTest.maxAbsDiff(logits, golden)).as("max |logits - golden|").isLessThanOrEqualTo(1e-4);
    }

    @Test
    void refusesStagesThatDoNotDivideTheLayers() {
        long[] ids = new long[24];
        assertThatThrownBy(() -> LogitsRunner.logits(Fixtures.hf("llama"), null, ReadChecks.ALL, ids, 1, 1, 1, 3, false))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("--pp 3 does not divide the checkpoint's 2 decoder layers (stages hold equal numbers of layers)");
    }
}
