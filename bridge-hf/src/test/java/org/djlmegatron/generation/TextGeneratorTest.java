package org.djlmegatron.generation;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.djlmegatron.bridge.BridgeFixtures;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Generation on the Hugging Face fixtures: greedy and seeded sampling identical at TP=1 and TP=2,
 * batched prompts of different lengths equal to each prompt alone, the KV cache equal to full
 * recomputation, prompt log-probabilities equal to transformers' golden logits, EOS and refusals.
 */
class TextGeneratorTest {

    static String[] models() {
        return BridgeFixtures.HF_MODELS;
    }

    /** Three prompts of lengths 7, 3 and 12 cut from the golden ids. */
    private static List<long[]> prompts(String model) {
        long[] ids = BridgeFixtures.goldenIds(BridgeFixtures.hf(model));
        return List.of(Arrays.copyOfRange(ids, 0, 7), Arrays.copyOfRange(ids, 24, 27), Arrays.copyOfRange(ids, 30, 42));
    }

    private static List<Prompt> rows(List<long[]> ids, int maxNew, Sampling s) {
        List<Prompt> out = new ArrayList<>();
        for (int i = 0; i < ids.size(); i++) {
            out.add(new Prompt(ids.get(i), maxNew, s, 42 + i));
        }
        return out;
    }

    private static List<List<Long>> newIds(List<Generated> g) {
        return g.stream().map(x -> Arrays.stream(x.ids()).boxed().toList()).toList();
    }

    private static TextGenerator open(String model, int tp) {
        return TextGenerator.open(BridgeFixtures.hf(model), null, tp, null, null);
    }

    @ParameterizedTest
    @MethodSource("models")
    void greedyAndSampledGenerationIdenticalAtTp1AndTp2(String model) {
        List<Prompt> greedy = rows(prompts(model), 20, Sampling.GREEDY);
        List<Prompt> sampled = rows(prompts(model), 20, Sampling.sample(0.9, 50, 0.95));
        List<Generated> g1;
        List<Generated> s1;
        List<Generated> recomputed;
        try (TextGenerator gen = open(model, 1)) {
            g1 = gen.generate(greedy, false, TokenListener.NONE);
            s1 = gen.generate(sampled, false, TokenListener.NONE);
            recomputed = gen.generate(greedy, false, TokenListener.NONE, false);
            // each prompt alone gives what it gave in the batch
            for (int i = 0; i < greedy.size(); i++) {
                assertThat(newIds(gen.generate(List.of(greedy.get(i)), false, TokenListener.NONE)).get(0))
                        .as("prompt %d alone", i).isEqualTo(newIds(g1).get(i));
                assertThat(newIds(gen.generate(List.of(sampled.get(i)), false, TokenListener.NONE)).get(0))
                        .as("sampled prompt %d alone", i).isEqualTo(newIds(s1).get(i));
            }
        }
        try (TextGenerator gen = open(model, 2)) {
            assertThat(newIds(gen.generate(greedy, false, TokenListener.NONE))).isEqualTo(newIds(g1));
            assertThat(newIds(gen.generate(sampled, false, TokenListener.NONE))).isEqualTo(newIds(s1));
        }
        assertThat(newIds(recomputed)).as("without the KV cache").isEqualTo(newIds(g1));
        assertThat(g1).allSatisfy(g -> assertThat(g.ids()).hasSize(20));
        assertThat(newIds(s1)).isNotEqualTo(newIds(g1));
    }

    @Test
    void promptLogprobsAreTransformersLogSoftmax() {
        var fixture = BridgeFixtures.hf("llama");
        long[] ids = BridgeFixtures.goldenIds(fixture);
        float[] golden = BridgeFixtures.goldenLogits(fixture);
        int vocab = 512;
        long[] first = Arrays.copyOfRange(ids, 0, 24);
        long[] shortOne = Arrays.copyOfRange(ids, 24, 34);
        try (TextGenerator gen = open("llama", 2)) {
            List<Generated> out = gen.generate(List.of(new Prompt(first, 0, Sampling.GREEDY, 1),
                    new Prompt(shortOne, 3, Sampling.GREEDY, 1)), true, TokenListener.NONE);
            assertThat(out.get(0).logprobs()).hasSize(23);
            assertThat(out.get(1).logprobs()).hasSize(9 + 3);
            for (int row = 0; row < 2; row++) {
                long[] p = row == 0 ? first : shortOne;
                for (int t = 1; t < p.length; t++) {
                    double expected = Sampler.logProb(golden, row * 24 + t - 1, vocab, p[t]);
                    assertThat(out.get(row).logprobs()[t - 1]).isCloseTo(expected, org.assertj.core.data.Offset.offset(1e-4));
                }
            }
        }
    }

    @Test
    void stopsAtEndOfSequenceAndRefusesBadPrompts() {
        long[] p = prompts("qwen2").get(0);
        long firstGreedy;
        try (TextGenerator gen = open("qwen2", 1)) {
            firstGreedy = gen.generate(List.of(new Prompt(p, 5, Sampling.GREEDY, 0)), false, TokenListener.NONE)
                    .get(0).ids()[0];
            assertThatThrownBy(() -> gen.generate(List.of(new Prompt(new long[200], 1, Sampling.GREEDY, 0)), false,
                    TokenListener.NONE)).isInstanceOf(InvalidRequestException.class)
                    .hasMessageContaining("200 tokens; the context holds 128");
            assertThatThrownBy(() -> gen.generate(List.of(new Prompt(new long[] {1, 512}, 1, Sampling.GREEDY, 0)),
                    false, TokenListener.NONE)).isInstanceOf(InvalidRequestException.class)
                    .hasMessageContaining("token id 512 is outside the vocabulary [0, 512)");
            assertThatThrownBy(() -> gen.encode("hello")).isInstanceOf(InvalidRequestException.class)
                    .hasMessageContaining("no tokenizer");
        }
        assertThatThrownBy(() -> new Prompt(new long[0], 1, Sampling.GREEDY, 0))
                .isInstanceOf(InvalidRequestException.class).hasMessageContaining("empty prompt");
        assertThatThrownBy(() -> Sampling.sample(1.0, 0, 1.5)).hasMessageContaining("top_p must be in (0, 1], found 1.5");
        assertThatThrownBy(() -> Sampling.sample(1.0, 0, 0.0)).hasMessageContaining("top_p must be in (0, 1]");
        try (TextGenerator gen = TextGenerator.open(BridgeFixtures.hf("qwen2"), null, 1, null, firstGreedy)) {
            List<TokenEvent> heard = new ArrayList<>();
            Generated g = gen.generate(List.of(new Prompt(p, 5, Sampling.GREEDY, 0)), false,
                    (row, id) -> heard.add(new TokenEvent(row, id))).get(0);
            assertThat(g.ids()).containsExactly(firstGreedy);
            assertThat(g.finishReason()).isEqualTo("stop");
            assertThat(heard).containsExactly(new TokenEvent(0, firstGreedy));
        }
    }

    @Test
    void aFailingListenerFailsItsCallAndTheRanksKeepServing() {
        List<Prompt> p = rows(prompts("llama"), 4, Sampling.GREEDY);
        try (TextGenerator gen = open("llama", 2)) {
            List<List<Long>> before = newIds(gen.generate(p, false, TokenListener.NONE));
            assertThatThrownBy(() -> gen.generate(p, false, (row, id) -> {
                throw new IllegalStateException("listener broke");
            })).hasMessageContaining("listener broke");
            assertThat(newIds(gen.generate(p, false, TokenListener.NONE))).isEqualTo(before);
        }
    }

    private record TokenEvent(int row, long id) {}
}
