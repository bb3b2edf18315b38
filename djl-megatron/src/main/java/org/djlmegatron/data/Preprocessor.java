package org.djlmegatron.data;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Megatron's {@code tools/preprocess_data.py}: JSON lines in, one MMIDIDX dataset per JSON key
 * out, the same bytes as Megatron writes (document = {@code tokenizer(text).input_ids}, plus EOD
 * if asked and the document is not empty; uint16 below 65500 tokens, else int32).
 *
 * <p>The calling thread reads batches of lines and hands each to a pool of {@code workers}
 * threads that decode, parse and tokenize it. Results are written strictly in input order
 * through a bounded window of batches in flight, so output does not depend on the worker count
 * and memory stays constant for any input size. Outputs are published atomically at the end
 * ({@link IndexedDatasetBuilder}); on any failure, nothing is left under the output prefix.
 *
 * <p>Input rules, as Megatron's reader applies them: a line is one JSON object; a wanted key must
 * be present, holding a string or an array of strings (sentences, one sequence each, empty ones
 * dropped). Differences, all in what Megatron would crash on: whitespace-only lines are skipped
 * and counted; gzip input is accepted; a UTF-8 byte order mark is ignored; every key's dataset is
 * written (Megatron's tool only finalises the last key's {@code .idx}).
 *
 * <p>On failure the pool is stopped and waited for (up to {@link #POOL_TIMEOUT_SECONDS}) before
 * {@code run} returns, so the caller may close the tokenizer at once; the output directories that
 * this run created are removed again. An existing dataset is replaced only with {@code overwrite}.
 */
public final class Preprocessor {

    /** Receives progress after each batch written, from the calling thread. */
    @FunctionalInterface
    public interface Listener {
        /**
         * @param inputPosition bytes of the input file consumed (compressed bytes for gzip)
         * @param documents documents written so far
         * @param tokens tokens written so far
         */
        void progress(long inputPosition, long documents, long tokens);
    }

    private static final int BATCH_BYTES = 64 << 10;
    private static final int BATCH_LINES = 512;
    private static final int MAX_REASONS = 10;
    /** How long a stopped run waits for the batches its workers are still encoding. */
    static final long POOL_TIMEOUT_SECONDS = 60;

    private final PreprocessConfig config;
    private final TextTokenizer tokenizer;
    private final int eod;
    private long lines;
    private long documents;
    private long tokens;
    private long textBytes;
    private long blankLines;
    private long badLines;
    private final List<String> badLineReasons = new ArrayList<>();

    private Preprocessor(PreprocessConfig config, TextTokenizer tokenizer) {
        this.config = config;
        this.tokenizer = tokenizer;
        this.eod = config.appendEod() ? tokenizer.eod() : -1;
    }

    /**
     * Runs the whole preprocessing.
     *
     * @throws InvalidDataException at the first bad line (naming file, line and reason) unless
     *     {@code skipBadLines}; nothing is published then
     */
    public static PreprocessResult run(PreprocessConfig config, TextTokenizer tokenizer, Listener listener) {
        if (!Files.isRegularFile(config.input())) {
            throw new InvalidDataException(config.input() + ": no such file (--input)");
        }
        if (!config.overwrite()) {
            for (String key : config.jsonKeys()) {
                Path prefix = config.datasetPrefix(key);
                for (Path p : List.of(IndexedDataset.binPath(prefix), IndexedDataset.idxPath(prefix))) {
                    if (Files.exists(p)) {
                        throw new InvalidDataException(p + ": exists; pass --overwrite to replace it");
                    }
                }
            }
        }
        CreatedDirectories created = CreatedDirectories.before(config.outputPrefix().toAbsolutePath().getParent());
        try {
            return new Preprocessor(config, tokenizer).run(listener);
        } catch (RuntimeException | Error e) {
            created.removeIfEmpty();
            throw e;
        }
    }

    private PreprocessResult run(Listener listener) {
        long t0 = System.nanoTime();
        TokenDType dtype = TokenDType.optimalFor(tokenizer.vocabSize());
        List<String> keys = config.jsonKeys();
        List<IndexedDatasetBuilder> builders = new ArrayList<>();
        AtomicInteger threadId = new AtomicInteger();
        ExecutorService pool = Executors.newFixedThreadPool(config.workers(), r -> {
            Thread t = new Thread(r, "preprocess-" + threadId.incrementAndGet());
            t.setDaemon(true);
            return t;
        });
        ArrayDeque<Future<EncodedBatch>> window = new ArrayDeque<>();
        int maxInFlight = 4 * config.workers();
        try (LineBatchReader reader = LineBatchReader.open(config.input())) {
            for (String key : keys) {
                builders.add(IndexedDatasetBuilder.create(config.datasetPrefix(key), dtype));
            }
            LineBatch batch;
            while ((batch = reader.next(BATCH_BYTES, BATCH_LINES)) != null) {
                LineBatch b = batch;
                window.add(pool.submit(() -> encode(b)));
                while (!window.isEmpty() && (window.size() >= maxInFlight || window.peek().isDone())) {
                    write(window.poll().get(), builders, listener);
                }
            }
            while (!window.isEmpty()) {
                write(window.poll().get(), builders, listener);
            }
            for (IndexedDatasetBuilder builder : builders) {
                builder.finish();
            }
            List<Path> published = keys.stream().map(config::datasetPrefix).toList();
            return new PreprocessResult(published, dtype, lines, documents, tokens, reader.size(), textBytes,
                    blankLines, badLines, badLineReasons, (System.nanoTime() - t0) / 1e9);
        } catch (IOException e) {
            throw new UncheckedIOException(config.input() + ": " + e.getMessage(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("preprocessing interrupted", e);
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            throw cause instanceof RuntimeException r ? r : new IllegalStateException(cause.getMessage(), cause);
        } finally {
            window.forEach(f -> f.cancel(true));
            stop(pool);
            builders.forEach(IndexedDatasetBuilder::close);
        }
    }

    /**
     * Stops the workers and waits for them: a worker may be inside a native encode that an
     * interrupt does not stop, and the caller closes the tokenizer as soon as {@code run} returns.
     */
    private static void stop(ExecutorService pool) {
        pool.shutdownNow();
        boolean stopped;
        try {
            stopped = pool.awaitTermination(POOL_TIMEOUT_SECONDS, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            stopped = false;
        }
        if (!stopped) {
            throw new IllegalStateException("preprocessing workers still running " + POOL_TIMEOUT_SECONDS
                    + " s after the stop");
        }
    }

    /** One batch, tokenized on a worker: per line, per key, the document's tokens and sequence lengths. */
    private record EncodedBatch(LineBatch lines, int[][][] tokens, int[][][] lengths, String[] errors,
            boolean[] blank) {}

    private EncodedBatch encode(LineBatch batch) {
        List<String> keys = config.jsonKeys();
        JsonLineParser parser = new JsonLineParser(keys);
        int n = batch.count();
        int[][][] tokens = new int[n][][];
        int[][][] lengths = new int[n][][];
        String[] errors = new String[n];
        boolean[] blank = new boolean[n];
        for (int i = 0; i < n; i++) {
            try {
                String[][] fields = parser.parse(batch.data(), batch.start(i), batch.end(i));
                if (fields == null) {
                    blank[i] = true;
                    continue;
                }
                tokens[i] = new int[keys.size()][];
                lengths[i] = new int[keys.size()][];
                for (int k = 0; k < keys.size(); k++) {
                    encodeDocument(fields[k], tokens[i], lengths[i], k);
                }
            } catch (InvalidDataException e) {
                errors[i] = config.input() + ":" + (batch.firstLine() + i) + ": " + e.getMessage();
            }
        }
        return new EncodedBatch(batch, tokens, lengths, errors, blank);
    }

    /** Megatron's {@code Encoder.encode} for one key: sentences concatenated, empty ones dropped, EOD last. */
    private void encodeDocument(String[] sentences, int[][] tokensOut, int[][] lengthsOut, int k) {
        int[][] ids = new int[sentences.length][];
        int total = 0;
        int nonEmpty = 0;
        for (int s = 0; s < sentences.length; s++) {
            ids[s] = tokenizer.encode(sentences[s]);
            total += ids[s].length;
            nonEmpty += ids[s].length > 0 ? 1 : 0;
        }
        boolean withEod = eod >= 0 && total > 0;
        int[] doc = new int[total + (withEod ? 1 : 0)];
        int[] lens = new int[nonEmpty];
        int at = 0;
        int seq = 0;
        for (int[] sentence : ids) {
            if (sentence.length > 0) {
                System.arraycopy(sentence, 0, doc, at, sentence.length);
                at += sentence.length;
                lens[seq++] = sentence.length;
            }
        }
        if (withEod) {
            doc[at] = eod;
            lens[nonEmpty - 1]++;
        }
        tokensOut[k] = doc;
        lengthsOut[k] = lens;
    }

    private void write(EncodedBatch batch, List<IndexedDatasetBuilder> builders, Listener listener) {
        LineBatch lb = batch.lines();
        for (int i = 0; i < lb.count(); i++) {
            lines++;
            if (batch.blank()[i]) {
                blankLines++;
            } else if (batch.errors()[i] != null) {
                if (!config.skipBadLines()) {
                    throw new InvalidDataException(batch.errors()[i]);
                }
                badLines++;
                if (badLineReasons.size() < MAX_REASONS) {
                    badLineReasons.add(batch.errors()[i]);
                }
            } else {
                for (int k = 0; k < builders.size(); k++) {
                    builders.get(k).addDocument(batch.tokens()[i][k], batch.lengths()[i][k]);
                    tokens += batch.tokens()[i][k].length;
                }
                documents++;
            }
        }
        textBytes += lb.textBytes();
        if (listener != null) {
            listener.progress(lb.inputPosition(), documents, tokens);
        }
    }
}
