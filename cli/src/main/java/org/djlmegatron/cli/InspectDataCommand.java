package org.djlmegatron.cli;

import static org.djlmegatron.options.OptionChecks.nonNegative;
import static org.djlmegatron.options.OptionChecks.positive;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.stream.Collectors;
import org.djlmegatron.data.BlendedDataset;
import org.djlmegatron.data.DataBlend;
import org.djlmegatron.data.DatasetSplits;
import org.djlmegatron.data.GPTDataset;
import org.djlmegatron.data.GPTDatasetConfig;
import org.djlmegatron.data.IndexedDataset;
import org.djlmegatron.data.SampleDataset;
import org.djlmegatron.data.Split;
import org.djlmegatron.data.SplitMatrix;
import org.djlmegatron.data.TextTokenizer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code inspect-data}: statistics of Megatron datasets and the GPT samples training would read. */
@Command(name = "inspect-data", mixinStandardHelpOptions = true,
        description = {"Print statistics of .bin/.idx datasets, their train/valid/test GPT splits, and decoded samples.",
                "Flags are pretrain-gpt's data flags (Megatron-LM names)."})
final class InspectDataCommand implements Callable<Integer> {

    /** Length quantiles are taken over at most this many sequences, evenly strided. */
    private static final int QUANTILE_SAMPLE = 1_000_000;

    @Option(names = "--data-path", arity = "1..*", required = true,
            description = "dataset prefixes, optionally weighted: PREFIX, or 0.3 PREFIX_A 0.7 PREFIX_B")
    List<String> dataPath;

    @Option(names = "--split", defaultValue = "969,30,1", description = "train,valid,test fractions (default: ${DEFAULT-VALUE})")
    String split;

    @Option(names = "--seq-length", defaultValue = "1024", description = "tokens per sample minus one (default: ${DEFAULT-VALUE})")
    int seqLength;

    @Option(names = "--seed", defaultValue = "1234", description = "shuffle seed (default: ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--train-samples", description = "training samples to build (default: one epoch; required for weighted blends)")
    Integer trainSamples;

    @Option(names = "--eval-samples", description = "validation and test samples each (default: one epoch; required "
            + "for weighted blends unless the split gives those sets nothing)")
    Integer evalSamples;

    @Option(names = "--data-cache-path", description = "directory for cached index files (default: no cache)")
    Path dataCachePath;

    @Option(names = "--tokenizer-type", description = "HuggingFaceTokenizer, GPT2BPETokenizer or ByteLevelTokenizer, to decode samples")
    String tokenizerType;

    @Mixin
    TokenizerFiles tokenizerFiles = new TokenizerFiles();

    @Option(names = "--show-samples", defaultValue = "2", description = "training samples to print (default: ${DEFAULT-VALUE})")
    int showSamples;

    @Override
    public Integer call() {
        positive("--seq-length", seqLength);
        positive("--train-samples", trainSamples);
        nonNegative("--show-samples", showSamples);
        DataBlend blend = DataBlend.parse(dataPath);
        SplitMatrix matrix = SplitMatrix.parse(split);
        GPTDatasetConfig config = new GPTDatasetConfig(seqLength, seed, dataCachePath);
        TextTokenizer tokenizer = tokenizerType == null ? null : tokenizerFiles.create(tokenizerType);
        Integer[] sizes = {trainSamples, evalSamples, evalSamples};
        try (DatasetSplits splits = DatasetSplits.build(blend, matrix, sizes, config)) {
            for (int d = 0; d < splits.opened().size(); d++) {
                describe(splits.opened().get(d), blend.weights() == null ? null : blend.weights()[d], tokenizer);
            }
            System.out.printf("splits %s, seq-length %d, seed %d:%n", matrix, seqLength, seed);
            for (Split s : Split.values()) {
                System.out.printf("  %-5s %s%n", s.label(), splits.get(s).map(InspectDataCommand::summary).orElse("none"));
            }
            splits.train().ifPresent(train -> {
                for (int i = 0; i < Math.min(showSamples, train.size()); i++) {
                    printSample(train, i, tokenizer);
                }
            });
        } finally {
            if (tokenizer != null) {
                tokenizer.close();
            }
        }
        return 0;
    }

    private void describe(IndexedDataset data, Double weight, TextTokenizer tokenizer) {
        long n = data.sequenceCount();
        System.out.printf(Locale.ROOT, "%s%s: %s tokens, %,d documents, %,d sequences, %,d tokens%n", data.prefix(),
                weight == null ? "" : String.format(Locale.ROOT, " (weight %.4f)", weight),
                data.dtype().name().toLowerCase(Locale.ROOT), data.documentCount(), n, data.tokenCount());
        if (n == 0) {
            return;
        }
        long stride = Math.max(1, (n + QUANTILE_SAMPLE - 1) / QUANTILE_SAMPLE);
        int[] lengths = new int[(int) ((n + stride - 1) / stride)];
        for (int i = 0; i < lengths.length; i++) {
            lengths[i] = data.sequenceLength(i * stride);
        }
        Arrays.sort(lengths);
        System.out.printf(Locale.ROOT, "  sequence length: min %,d  p50 %,d  mean %,.1f  p99 %,d  max %,d%s%n",
                lengths[0], quantile(lengths, 0.5), data.tokenCount() / (double) n, quantile(lengths, 0.99),
                lengths[lengths.length - 1], stride > 1 ? " (quantiles over every " + stride + "th sequence)" : "");
        long empty = 0;
        long endsWithEod = 0;
        Integer eod = eodOf(tokenizer);
        for (long d = 0; d < data.documentCount(); d++) {
            long first = data.documentIndex(d);
            long last = data.documentIndex(d + 1) - 1;
            if (last < first) {
                empty++;
            } else if (eod != null) {
                int len = data.sequenceLength(last);
                if (len > 0 && data.get(last, len - 1, 1)[0] == eod) {
                    endsWithEod++;
                }
            }
        }
        System.out.printf(Locale.ROOT, "  documents without sequences: %,d%s%n", empty, eod == null ? ""
                : String.format(Locale.ROOT, "; ending with EOD (id %d): %,d", eod, endsWithEod));
    }

    private static String summary(SampleDataset ds) {
        String what = String.format(Locale.ROOT, "%,d samples of %,d tokens", ds.size(), ds.sequenceLength() + 1);
        if (ds instanceof GPTDataset g) {
            return String.format(Locale.ROOT, "%s; sequences [%d, %d), %d epoch%s", what, g.begin(), g.end(),
                    g.epochs(), g.epochs() == 1 ? "" : "s");
        }
        if (ds instanceof BlendedDataset b) {
            return what + ", blended with weights " + Arrays.stream(b.weights())
                    .mapToObj(w -> String.format(Locale.ROOT, "%.4f", w)).collect(Collectors.joining(", "));
        }
        return what;
    }

    private static void printSample(SampleDataset train, int i, TextTokenizer tokenizer) {
        long[] tokens = train.sample(i);
        long[] head = Arrays.copyOf(tokens, Math.min(16, tokens.length));
        System.out.printf(Locale.ROOT, "train sample %d: %s%s%n", i, Arrays.toString(head),
                tokens.length > head.length ? " ... (" + tokens.length + " tokens)" : "");
        if (tokenizer != null) {
            String text = tokenizer.decode(tokens);
            String shown = text.length() > 400 ? text.substring(0, 400) + " ..." : text;
            System.out.println("  " + shown.replace("\n", "\\n"));
        }
    }

    private static Integer eodOf(TextTokenizer tokenizer) {
        try {
            return tokenizer == null ? null : tokenizer.eod();
        } catch (RuntimeException e) {
            return null;
        }
    }

    private static int quantile(int[] sorted, double q) {
        return sorted[(int) Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
    }
}
