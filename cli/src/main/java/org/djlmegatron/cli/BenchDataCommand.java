package org.djlmegatron.cli;

import static org.djlmegatron.options.OptionChecks.positive;

import com.google.gson.JsonElement;
import com.google.gson.JsonParser;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.concurrent.Callable;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Supplier;
import java.util.stream.Stream;
import java.util.zip.GZIPInputStream;
import org.djlmegatron.data.GPTDataset;
import org.djlmegatron.data.GPTDatasetConfig;
import org.djlmegatron.data.IndexedDataset;
import org.djlmegatron.data.PreprocessConfig;
import org.djlmegatron.data.PreprocessResult;
import org.djlmegatron.data.Preprocessor;
import org.djlmegatron.data.Split;
import org.djlmegatron.data.TextTokenizer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code bench-data}: preprocessing throughput at several worker counts next to the raw
 * tokenizer's encode throughput at the same thread counts, measured in the same run (so the
 * ratio says how much the pipeline costs beyond tokenizing), and GPT sample random access.
 */
@Command(name = "bench-data", mixinStandardHelpOptions = true,
        description = "Benchmark preprocess-data against raw tokenizer encoding, and dataset random access.")
final class BenchDataCommand implements Callable<Integer> {

    @Option(names = "--input", required = true, description = "JSON lines corpus (plain or .gz)")
    Path input;

    @Option(names = "--json-keys", arity = "1..*", defaultValue = "text", description = "fields to tokenize")
    List<String> jsonKeys;

    @Option(names = "--tokenizer-type", required = true, description = "HuggingFaceTokenizer, GPT2BPETokenizer or ByteLevelTokenizer")
    String tokenizerType;

    @Mixin
    TokenizerFiles tokenizerFiles = new TokenizerFiles();

    @Option(names = "--append-eod", description = "append EOD as preprocess-data would")
    boolean appendEod;

    @Option(names = "--workers", split = ",", description = "worker counts to run (default: 1 and the number of cores)")
    List<Integer> workers;

    @Option(names = "--repeats", defaultValue = "3", description = "runs per measurement, best kept (default: ${DEFAULT-VALUE})")
    int repeats;

    @Option(names = "--seq-length", defaultValue = "1024", description = "sample length for random access (default: ${DEFAULT-VALUE})")
    int seqLength;

    @Option(names = "--random-samples", defaultValue = "20000", description = "random samples read (default: ${DEFAULT-VALUE})")
    int randomSamples;

    @Override
    public Integer call() throws IOException {
        positive("--repeats", repeats);
        positive("--seq-length", seqLength);
        positive("--random-samples", randomSamples);
        int cores = Runtime.getRuntime().availableProcessors();
        List<Integer> counts = workers != null ? workers : cores > 1 ? List.of(1, cores) : List.of(1);
        List<String> texts = texts();
        long inputBytes = Files.size(input);
        Path tmp = Files.createTempDirectory("bench-data");
        try (TextTokenizer tokenizer = tokenizerFiles.create(tokenizerType)) {
            System.out.printf(Locale.ROOT, "corpus %s: %.3f MB, %,d texts; %s; %d cores%n", input, inputBytes / 1e6,
                    texts.size(), tokenizer.describe(), cores);
            encodeSeconds(tokenizer, texts, 1); // warm-up: JIT and the tokenizer's caches
            Path last = null;
            for (int w : counts) {
                double[] raw = best(() -> encodeSeconds(tokenizer, texts, w));
                long tokens = (long) raw[1];
                System.out.printf(Locale.ROOT, "raw encode, %d thread%s: %.3f s, %.2f MB/s, %,.0f tokens/s%n", w,
                        w == 1 ? "" : "s", raw[0], inputBytes / 1e6 / raw[0], tokens / raw[0]);
                Path prefix = tmp.resolve("w" + w);
                double[] pre = best(() -> {
                    PreprocessResult r = Preprocessor.run(new PreprocessConfig(input, jsonKeys, prefix, appendEod, w,
                            false), tokenizer, null);
                    return new double[] {r.seconds(), r.tokens()};
                });
                System.out.printf(Locale.ROOT, "preprocess-data, %d worker%s: %.3f s, %.2f MB/s, %,.0f tokens/s, "
                        + "%.2fx the raw encode throughput%n", w, w == 1 ? "" : "s", pre[0], inputBytes / 1e6 / pre[0],
                        pre[1] / pre[0], (pre[1] / pre[0]) / (tokens / raw[0]));
                last = prefix;
            }
            randomAccess(new PreprocessConfig(input, jsonKeys, last, appendEod, 1, false).datasetPrefix(jsonKeys.get(0)));
        } finally {
            try (Stream<Path> files = Files.walk(tmp)) {
                files.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
        return 0;
    }

    /** GPT samples read in random order from one thread: the data loader's cost per sample. */
    private void randomAccess(Path prefix) {
        try (IndexedDataset data = IndexedDataset.open(prefix)) {
            GPTDataset ds = GPTDataset.build(data, Split.TRAIN, 0, (int) data.sequenceCount(), randomSamples,
                    new GPTDatasetConfig(seqLength, 1234, null));
            Random rng = new Random(7);
            long checksum = 0;
            for (int i = 0; i < Math.min(1000, randomSamples); i++) {
                checksum += ds.sample(rng.nextInt(ds.size()))[0];
            }
            long t0 = System.nanoTime();
            for (int i = 0; i < randomSamples; i++) {
                checksum += ds.sample(rng.nextInt(ds.size()))[seqLength];
            }
            double s = (System.nanoTime() - t0) / 1e9;
            System.out.printf(Locale.ROOT, "dataset random access, seq-length %d, 1 thread: %,.0f samples/s, "
                    + "%,.0f tokens/s (%d samples, %d epochs; checksum %d)%n", seqLength, randomSamples / s,
                    randomSamples * (seqLength + 1.0) / s, ds.size(), ds.epochs(), checksum);
        }
    }

    /** Seconds and tokens to encode every text on {@code threads} threads sharing one tokenizer. */
    private static double[] encodeSeconds(TextTokenizer tokenizer, List<String> texts, int threads) {
        AtomicInteger next = new AtomicInteger();
        long[] tokens = new long[threads];
        Thread[] pool = new Thread[threads];
        long t0 = System.nanoTime();
        for (int t = 0; t < threads; t++) {
            int id = t;
            pool[t] = new Thread(() -> {
                for (int i; (i = next.getAndIncrement()) < texts.size(); ) {
                    tokens[id] += tokenizer.encode(texts.get(i)).length;
                }
            });
            pool[t].start();
        }
        long total = 0;
        for (int t = 0; t < threads; t++) {
            try {
                pool[t].join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException(e);
            }
            total += tokens[t];
        }
        return new double[] {(System.nanoTime() - t0) / 1e9, total};
    }

    private double[] best(Supplier<double[]> run) {
        double[] best = null;
        for (int i = 0; i < repeats; i++) {
            double[] r = run.get();
            if (best == null || r[0] < best[0]) {
                best = r;
            }
        }
        return best;
    }

    /** Every text field of the input (string values only), held in memory for the raw measurement. */
    private List<String> texts() {
        List<String> out = new ArrayList<>();
        try (InputStream raw = Files.newInputStream(input);
                InputStream in = input.toString().endsWith(".gz") ? new GZIPInputStream(raw) : raw;
                BufferedReader reader = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
            for (String line; (line = reader.readLine()) != null; ) {
                if (line.isBlank()) {
                    continue;
                }
                for (String key : jsonKeys) {
                    JsonElement v = JsonParser.parseString(line).getAsJsonObject().get(key);
                    if (v != null && v.isJsonPrimitive()) {
                        out.add(v.getAsString());
                    }
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(input + ": " + e.getMessage(), e);
        }
        return out;
    }
}
