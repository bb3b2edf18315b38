package org.djlmegatron.generation;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.Model;
import ai.djl.inference.Predictor;
import java.util.List;
import org.djlmegatron.bridge.BridgeFixtures;
import org.djlmegatron.data.ByteLevelTokenizer;
import org.junit.jupiter.api.Test;

/** Generation the DJL way: {@code model.newPredictor(translator).predict(prompt)}. */
class GenerationTranslatorTest {

    @Test
    void predictorReturnsTheGeneratorsContinuation() throws Exception {
        try (TextGenerator gen = new TextGenerator(ModelRanks.load(BridgeFixtures.hf("qwen3"), null, 2),
                new ByteLevelTokenizer(), null);
                Model model = GenerationBlock.model(gen, 8, Sampling.GREEDY, 0);
                Predictor<String, String> predictor = model.newPredictor(new GenerationTranslator(gen))) {
            String out = predictor.predict("Hello, DJL");
            long[] expected = gen.generate(List.of(new Prompt(gen.encode("Hello, DJL"), 8, Sampling.GREEDY, 0)), false,
                    TokenListener.NONE).get(0).ids();
            assertThat(expected).hasSize(8);
            assertThat(out).isEqualTo(gen.decode(expected));
            assertThat(predictor.batchPredict(List.of("Hello, DJL", "Hello, DJL"))).containsExactly(out, out);
        }
    }

    @Test
    void textTranslatorNeedsATokenizer() {
        try (TextGenerator gen = new TextGenerator(ModelRanks.load(BridgeFixtures.hf("gpt2"), null, 1), null, null)) {
            assertThatThrownBy(() -> new GenerationTranslator(gen)).hasMessageContaining("no tokenizer");
        }
    }
}
