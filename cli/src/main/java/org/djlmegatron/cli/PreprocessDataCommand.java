package org.djlmegatron.cli;

import static org.djlmegatron.options.OptionChecks.positive;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.djlmegatron.data.IndexedDataset;
import org.djlmegatron.data.PreprocessConfig;
import org.djlmegatron.data.PreprocessResult;
import org.djlmegatron.data.Preprocessor;
import org.djlmegatron.data.TextTokenizer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code preprocess-data}: Megatron's {@code tools/preprocess_data.py}, same flags, same bytes. */
@Command(name = "preprocess-data", mixinStandardHelpOptions = true,
        description = {"Tokenize JSON lines into Megatron .bin/.idx datasets (MMIDIDX), byte for byte as "
                + "Megatron-LM's tools/preprocess_data.py writes them.",
                "Writes <output-prefix>_<key>_document.bin/.idx per JSON key, atomically."})
final class PreprocessDataCommand implements Callable<Integer> {

    @Option(names = "--input", required = true, description = "JSON lines file, plain or gzip (.jsonl, .jsonl.gz)")
    Path input;

    @Option(names = "--json-keys", arity = "1..*", defaultValue = "text",
            description = "fields to tokenize, one dataset each (default: ${DEFAULT-VALUE})")
    List<String> jsonKeys;

    @Option(names = "--output-prefix", required = true, description = "output path prefix, without suffix")
    Path outputPrefix;

    @Option(names = "--tokenizer-type", required = true,
            description = "HuggingFaceTokenizer (needs --tokenizer-model), GPT2BPETokenizer (needs --vocab-file and "
                    + "--merge-file) or ByteLevelTokenizer (UTF-8 bytes, EOD 256)")
    String tokenizerType;

    @Mixin
    TokenizerFiles tokenizerFiles = new TokenizerFiles();

    @Option(names = "--append-eod", description = "end each non-empty document with the tokenizer's EOS token")
    boolean appendEod;

    @Option(names = "--workers", description = "tokenizing threads (default: the number of cores)")
    int workers = Runtime.getRuntime().availableProcessors();

    @Option(names = "--skip-bad-lines", description = "skip and count malformed lines instead of stopping at the first")
    boolean skipBadLines;

    @Option(names = "--overwrite", description = "replace existing datasets under --output-prefix (refused otherwise)")
    boolean overwrite;

    @Override
    public Integer call() throws IOException {
        positive("--workers", workers);
        PreprocessConfig config = new PreprocessConfig(input, jsonKeys, outputPrefix, appendEod, workers, skipBadLines,
                overwrite);
        try (TextTokenizer tokenizer = tokenizerFiles.create(tokenizerType)) {
            long size = Files.isRegularFile(input) ? Files.size(input) : 0;
            ProgressBar bar = new ProgressBar("preprocess-data", size, "MB", 1e6).withItems("docs");
            PreprocessResult r;
            try {
                r = Preprocessor.run(config, tokenizer, (position, documents, tokens) -> bar.update(position, documents));
            } catch (RuntimeException e) {
                bar.stop();
                throw e;
            }
            bar.finish();
            report(r, tokenizer);
        }
        return 0;
    }

    private void report(PreprocessResult r, TextTokenizer tokenizer) {
        for (Path prefix : r.datasets()) {
            System.out.printf("wrote %s and %s%n", IndexedDataset.binPath(prefix), IndexedDataset.idxPath(prefix));
        }
        System.out.printf(Locale.ROOT, "%,d documents, %,d tokens (%s, vocabulary %,d, %s), %.2f MB in %.2f s: "
                + "%.2f MB/s, %,.0f tokens/s, %d workers%n", r.documents(), r.tokens(),
                r.dtype().name().toLowerCase(Locale.ROOT), tokenizer.vocabSize(), tokenizer.describe(),
                r.textBytes() / 1e6, r.seconds(), r.textBytes() / 1e6 / r.seconds(), r.tokens() / r.seconds(), workers);
        if (r.blankLines() > 0) {
            System.out.printf("skipped %,d blank lines%n", r.blankLines());
        }
        if (r.badLines() > 0) {
            System.err.printf("skipped %,d bad lines (of %,d)%s%n", r.badLines(), r.lines(),
                    r.badLines() > r.badLineReasons().size() ? "; the first " + r.badLineReasons().size() + ":" : ":");
            r.badLineReasons().forEach(reason -> System.err.println("  " + reason));
        }
    }
}
