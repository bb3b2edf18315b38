package org.djlmegatron.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.djlmegatron.data.HuggingFaceTextTokenizer;
import org.djlmegatron.data.TextTokenizer;
import org.djlmegatron.pretrain.Evaluation;
import org.djlmegatron.pretrain.PretrainOptions;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code evaluate}: loss and perplexity of a checkpoint on held-out data. */
@Command(name = "evaluate", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Loss and perplexity of a checkpoint (hf, megatron, megatron-dist or djl) at --tp x --dp thread ranks.",
            "On a Megatron dataset (--data-path) or --mock-data: the validation batches pretrain-gpt evaluates with the "
                + "same flags (--split --seq-length --seed --micro-batch-size --global-batch-size --eval-iters, and "
                + "--train-iters --eval-interval, which size the splits), averaged as pretrain-gpt does: the same numbers.",
            "On a JSONL file (--jsonl): every document through the tokenizer, end-of-document ids between them, cut into "
                + "--seq-length windows; the mean over every predicted token."})
final class EvaluateCommand implements Callable<Integer> {

    @Option(names = "--checkpoint", required = true, description = "checkpoint directory: hf, megatron, megatron-dist or djl (detected)")
    Path checkpoint;

    @Option(names = "--model-config", description = "Megatron arguments as JSON, for a Megatron checkpoint without args")
    Path modelConfig;

    @Option(names = "--tp", defaultValue = "1", description = "tensor-parallel size (default: ${DEFAULT-VALUE})")
    int tp;

    @Option(names = "--dp", defaultValue = "1", description = "data-parallel size; tp x dp thread ranks (default: ${DEFAULT-VALUE})")
    int dp;

    @Option(names = "--data-path", arity = "1..*", description = "Megatron datasets: PREFIX, or WEIGHT PREFIX WEIGHT PREFIX ... (blend)")
    List<String> dataPath;

    @Option(names = "--mock-data", description = "pretrain-gpt's synthetic sequences (held-out iterations)")
    boolean mockData;

    @Option(names = "--split", defaultValue = "969,30,1", description = "train,valid,test proportions; the valid split "
            + "is evaluated (default: ${DEFAULT-VALUE})")
    String split;

    @Option(names = "--seq-length", defaultValue = "128", description = "tokens per sample (default: ${DEFAULT-VALUE})")
    int seqLength;

    @Option(names = "--seed", defaultValue = "1234", description = "the training seed (shuffles the samples; default: ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--data-cache-path", description = "where index files are cached (default: beside the data)")
    Path dataCachePath;

    @Option(names = "--micro-batch-size", defaultValue = "4", description = "rows per forward pass (default: ${DEFAULT-VALUE})")
    int microBatchSize;

    @Option(names = "--global-batch-size", description = "rows per evaluation iteration (default: micro batch x dp)")
    Integer globalBatchSize;

    @Option(names = "--eval-iters", defaultValue = "10", description = "global batches evaluated (default: ${DEFAULT-VALUE})")
    int evalIters;

    @Option(names = "--train-iters", defaultValue = "0", description = "the training run's, which sizes the splits as "
            + "pretrain-gpt did (default: ${DEFAULT-VALUE})")
    long trainIters;

    @Option(names = "--eval-interval", defaultValue = "0", description = "the training run's, likewise (default: ${DEFAULT-VALUE})")
    long evalInterval;

    @Option(names = "--jsonl", description = "JSON lines of documents to evaluate instead of a Megatron dataset")
    Path jsonl;

    @Option(names = "--json-keys", defaultValue = "text", description = "the field holding each document's text (default: ${DEFAULT-VALUE})")
    String jsonKey;

    @Option(names = "--tokenizer-type", defaultValue = HuggingFaceTextTokenizer.TYPE,
            description = "HuggingFaceTokenizer or ByteLevelTokenizer, for --jsonl (default: ${DEFAULT-VALUE})")
    String tokenizerType;

    @Option(names = "--tokenizer-model", description = "tokenizer.json or its directory, for --jsonl (default: the "
            + "checkpoint directory's tokenizer.json)")
    Path tokenizerModel;

    @Override
    public Integer call() {
        if (microBatchSize < 1 || evalIters < 1 || seqLength < 1) {
            throw new IllegalArgumentException("--micro-batch-size, --eval-iters and --seq-length must be >= 1, found "
                    + microBatchSize + ", " + evalIters + ", " + seqLength);
        }
        int sources = (jsonl != null ? 1 : 0) + (dataPath != null ? 1 : 0) + (mockData ? 1 : 0);
        if (sources != 1) {
            throw new IllegalArgumentException("give exactly one of --data-path, --mock-data and --jsonl");
        }
        Evaluation.Result r;
        if (jsonl != null) {
            try (TextTokenizer tok = tokenizer()) {
                r = Evaluation.onJsonl(checkpoint, modelConfig, tp, dp, jsonl, jsonKey, tok, seqLength, microBatchSize,
                        progress());
            }
        } else {
            PretrainOptions o = new PretrainOptions();
            o.dataPath = dataPath;
            o.mockData = mockData;
            o.split = split;
            o.seqLength = seqLength;
            o.seed = seed;
            o.dataCachePath = dataCachePath;
            o.microBatchSize = microBatchSize;
            o.globalBatchSize = globalBatchSize;
            o.evalIters = evalIters;
            o.trainIters = trainIters;
            o.evalInterval = evalInterval;
            r = Evaluation.onMegatronData(checkpoint, modelConfig, tp, dp, o, progress());
        }
        System.out.printf(Locale.ROOT, " validation loss | lm loss value: %.6E | lm loss PPL: %.6E | tokens: %d |%n",
                r.loss(), r.perplexity(), r.tokens());
        return 0;
    }

    private TextTokenizer tokenizer() {
        Path model = tokenizerModel;
        if (model == null && tokenizerType.equals(HuggingFaceTextTokenizer.TYPE)) {
            if (!Files.isRegularFile(checkpoint.resolve("tokenizer.json"))) {
                throw new IllegalArgumentException("--jsonl needs a tokenizer: " + checkpoint
                        + " has no tokenizer.json; give --tokenizer-model (or --tokenizer-type ByteLevelTokenizer)");
            }
            model = checkpoint;
        }
        return TextTokenizer.create(tokenizerType, model);
    }

    /** A progress bar on stderr over rank 0's evaluation batches. */
    private static Evaluation.Progress progress() {
        ProgressBar[] bar = {null};
        return (done, total) -> {
            if (bar[0] == null) {
                bar[0] = new ProgressBar("evaluate", total, "batches", 1);
            }
            bar[0].update(done, 0);
            if (done == total) {
                bar[0].finish();
            }
        };
    }
}
