package org.djlmegatron.bridge.megatron;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.djlmegatron.bridge.BridgeFixtures;
import org.djlmegatron.bridge.LogitsRunner;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Megatron-Core's own checkpoints (both formats) give Megatron's logits, within 1e-4, at TP 1 and
 * at TP 2 with sequence parallelism.
 */
class MegatronGoldenLogitsTest {

    @TempDir
    Path tmp;

    static Stream<Arguments> cases() {
        List<Arguments> out = new ArrayList<>();
        for (String model : new String[] {"mcore_gpt", "mcore_moe"}) {
            for (String format : new String[] {"torch", "torch_dist"}) {
                out.add(Arguments.of(model, format, 1, false));
                out.add(Arguments.of(model, format, 2, true));
            }
        }
        return out.stream();
    }

    @ParameterizedTest(name = "{0}/{1} tp={2} sp={3}")
    @MethodSource("cases")
    void logitsMatchMegatron(String model, String format, int tp, boolean sp) throws Exception {
        Path fixture = BridgeFixtures.megatron(model);
        Path config = BridgeFixtures.mcoreConfig(model, tmp.resolve("model.json"));
        long[] ids = BridgeFixtures.goldenIds(fixture);
        float[] logits = LogitsRunner.logits(fixture.resolve(format), config, ids, 2, tp, sp);
        assertThat(BridgeFixtures.maxAbsDiff(logits, BridgeFixtures.goldenLogits(fixture)))
                .as("max |logits - golden|").isLessThanOrEqualTo(1e-4);
    }
}
