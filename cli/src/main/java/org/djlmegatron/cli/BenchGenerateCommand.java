package org.djlmegatron.cli;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import org.djlmegatron.generation.ModelRanks;
import org.djlmegatron.generation.Prompt;
import org.djlmegatron.generation.Sampling;
import org.djlmegatron.generation.TextGenerator;
import org.djlmegatron.generation.TokenListener;
import org.djlmegatron.transformer.TransformerConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code bench-generate}: decoding throughput with the KV cache against recomputing the whole
 * prefix at every step, at several batch sizes, in the same run (ratios are what carries over).
 */
@Command(name = "bench-generate", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Benchmark greedy decoding: new tokens/s with the KV cache vs full recomputation at each step, "
                + "per batch size, same run, same prompts (the outputs are checked equal).",
            "Default model: a Llama-like reference GPT with random weights; --checkpoint measures a real one."})
final class BenchGenerateCommand implements Callable<Integer> {

    @Option(names = "--checkpoint", description = "checkpoint to measure (default: the reference model below)")
    java.nio.file.Path checkpoint;
    @Option(names = "--num-layers", defaultValue = "4", description = "reference model (default: ${DEFAULT-VALUE})")
    int layers;
    @Option(names = "--hidden-size", defaultValue = "256", description = "(default: ${DEFAULT-VALUE})")
    int hidden;
    @Option(names = "--num-attention-heads", defaultValue = "8", description = "(default: ${DEFAULT-VALUE})")
    int heads;
    @Option(names = "--vocab-size", defaultValue = "4096", description = "(default: ${DEFAULT-VALUE})")
    int vocab;
    @Option(names = "--prompt-length", defaultValue = "32", description = "prompt tokens per row (default: ${DEFAULT-VALUE})")
    int promptLength;
    @Option(names = "--new-tokens", defaultValue = "64", description = "tokens generated per row (default: ${DEFAULT-VALUE})")
    int newTokens;
    @Option(names = "--batch-sizes", split = ",", defaultValue = "1,8", description = "rows decoded together (default: ${DEFAULT-VALUE})")
    List<Integer> batchSizes;
    @Option(names = "--tp", defaultValue = "1", description = "tensor-parallel size (default: ${DEFAULT-VALUE})")
    int tp;
    @Option(names = "--repeats", defaultValue = "2", description = "timed runs per setting, best kept (default: ${DEFAULT-VALUE})")
    int repeats;

    @Override
    public Integer call() {
        if (tp < 1 || repeats < 1 || promptLength < 1 || newTokens < 1) {
            throw new IllegalArgumentException("--tp, --repeats, --prompt-length and --new-tokens must be >= 1");
        }
        // no tokenizer and no end-of-sequence id: every row runs its full length
        TextGenerator gen = new TextGenerator(checkpoint != null ? ModelRanks.load(checkpoint, null, tp) : reference(),
                null, null);
        try (gen) {
            TransformerConfig cfg = gen.ranks().config();
            if (promptLength + newTokens > cfg.maxPositionEmbeddings()) {
                throw new IllegalArgumentException("--prompt-length + --new-tokens (" + (promptLength + newTokens)
                        + ") exceeds the model's context " + cfg.maxPositionEmbeddings());
            }
            System.out.printf(Locale.ROOT, "model: %d layers, hidden %d, %d heads, vocab %d, TP=%d; prompt %d tokens, "
                    + "%d new tokens per row, greedy, fp32%n", cfg.numLayers(), cfg.hiddenSize(), cfg.numAttentionHeads(),
                    cfg.vocabSize(), tp, promptLength, newTokens);
            for (boolean cache : new boolean[] {true, false}) { // warm-up (JIT, allocator)
                gen.generate(prompts(1, cfg.vocabSize()), false, TokenListener.NONE, cache);
            }
            for (int b : batchSizes) {
                List<Prompt> p = prompts(b, cfg.vocabSize());
                List<List<Long>> withCache = new ArrayList<>();
                List<List<Long>> without = new ArrayList<>();
                double cached = bestSeconds(gen, p, true, withCache);
                double full = bestSeconds(gen, p, false, without);
                if (!withCache.equals(without)) {
                    throw new IllegalStateException("batch " + b + ": the KV cache and full recomputation chose "
                            + "different tokens");
                }
                double tokens = (double) b * newTokens;
                System.out.printf(Locale.ROOT, "batch %d: KV cache %.1f tokens/s (%.1f ms/step), recompute %.1f tokens/s "
                        + "(%.1f ms/step); cache/recompute %.2fx%n", b, tokens / cached, cached / newTokens * 1e3,
                        tokens / full, full / newTokens * 1e3, full / cached);
            }
        }
        return 0;
    }

    private ModelRanks reference() {
        TransformerConfig cfg = TransformerConfig.builder().numLayers(layers).hiddenSize(hidden).numAttentionHeads(heads)
                .vocabSize(vocab).maxPositionEmbeddings(Math.max(128, promptLength + newTokens)).build();
        return ModelRanks.of(cfg, tp, model -> model.initializeRandom(1234, 0.02f));
    }

    private List<Prompt> prompts(int rows, int vocabSize) {
        SplittableRandom rng = new SplittableRandom(7);
        List<Prompt> out = new ArrayList<>();
        for (int r = 0; r < rows; r++) {
            out.add(new Prompt(rng.longs(promptLength, 0, vocabSize).toArray(), newTokens, Sampling.GREEDY, r));
        }
        return out;
    }

    /** Best wall time of {@code repeats} runs; with and without the cache must agree token for token. */
    private double bestSeconds(TextGenerator gen, List<Prompt> p, boolean cache, List<List<Long>> ids) {
        double best = Double.MAX_VALUE;
        for (int i = 0; i < Math.max(1, repeats); i++) {
            long t0 = System.nanoTime();
            var out = gen.generate(p, false, TokenListener.NONE, cache);
            best = Math.min(best, (System.nanoTime() - t0) / 1e9);
            ids.clear();
            out.forEach(g -> ids.add(java.util.Arrays.stream(g.ids()).boxed().toList()));
        }
        return best;
    }
}
