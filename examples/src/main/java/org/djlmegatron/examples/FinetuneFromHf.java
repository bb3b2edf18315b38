package org.djlmegatron.examples;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.djlmegatron.bridge.CheckpointFormat;
import org.djlmegatron.bridge.LogitsRunner;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.bridge.hf.HfCheckpoint;
import org.djlmegatron.pretrain.PretrainGpt;
import org.djlmegatron.pretrain.PretrainOptions;
import org.djlmegatron.training.StepResult;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Fine-tunes a Hugging Face checkpoint and exports the result as a Hugging Face checkpoint again:
 * {@code pretrain-gpt}'s driver run in-process ({@link PretrainGpt} with Megatron's flags,
 * {@code --init-hf} to start from the HF weights, TP=2 with sequence parallelism on thread ranks,
 * {@code --save} to write a checkpoint), then {@code convert --to hf}. Checks that the exported
 * checkpoint computes exactly the fine-tuned model's logits, and that they moved away from the
 * original model's.
 *
 * <p>The data here is {@code --mock-data} (learnable synthetic sequences within the model's
 * vocabulary); for real text give {@code --data-path} with a dataset made by
 * {@code preprocess-data} using the model's own tokenizer.
 */
@Command(name = "FinetuneFromHf", mixinStandardHelpOptions = true,
        description = "Fine-tune a Hugging Face checkpoint at TP=2 and export it back to Hugging Face.")
public final class FinetuneFromHf implements Callable<Integer> {

    @Option(names = "--hf", defaultValue = "../shared/fixtures/hf/llama",
            description = "the Hugging Face checkpoint to start from (default: ${DEFAULT-VALUE})")
    Path hf;

    @Option(names = "--train-iters", defaultValue = "80", description = "optimizer steps (default: ${DEFAULT-VALUE})")
    int trainIters;

    @Option(names = "--work-dir", description = "where the checkpoints go (default: a temporary directory)")
    Path workDir;

    /**
     * What fine-tuning did.
     *
     * @param steps the training steps
     * @param exportedVsTrained max |logits of the exported HF checkpoint - logits of the trained checkpoint|
     * @param trainedVsOriginal max |logits after fine-tuning - logits before|
     * @param exported the exported Hugging Face checkpoint
     */
    public record Result(List<StepResult> steps, double exportedVsTrained, double trainedVsOriginal, Path exported) {}

    public static void main(String[] args) {
        System.exit(new CommandLine(new FinetuneFromHf()).execute(args));
    }

    @Override
    public Integer call() throws IOException {
        try (WorkDir dir = WorkDir.of(workDir, "finetune-from-hf", System.out)) {
            Result r = run(hf, trainIters, dir.path(), System.out);
            System.out.printf(Locale.ROOT, "loss %.3f -> %.3f; exported HF checkpoint: %s%n", r.steps().get(0).loss(),
                    r.steps().get(r.steps().size() - 1).loss(), r.exported());
            System.out.printf(Locale.ROOT, "its logits vs the fine-tuned model's: max |diff| = %.1e (moved %.3f from the original)%n",
                    r.exportedVsTrained(), r.trainedVsOriginal());
            return r.exportedVsTrained() == 0 ? 0 : 1;
        }
    }

    public static Result run(Path hf, int trainIters, Path dir, PrintStream out) {
        Path trained = dir.resolve("finetuned"); // this project's checkpoint format, split for TP=2
        Path exported = dir.resolve("finetuned-hf");

        // 1. Fine-tune: Megatron's flags, the model shape comes from the HF config.
        PretrainOptions options = new PretrainOptions();
        new CommandLine(options).parseArgs(
                "--init-hf", hf.toString(), "--mock-data", "--seq-length", "32",
                "--micro-batch-size", "4", "--global-batch-size", "8",
                "--nproc-per-node", "2", "--tensor-model-parallel-size", "2", "--sequence-parallel",
                "--lr", "3e-3", "--min-lr", "3e-4", "--lr-warmup-iters", "5", "--lr-decay-style", "cosine",
                "--train-iters", String.valueOf(trainIters), "--log-interval", "20",
                "--save", trained.toString());
        List<StepResult> steps = new PretrainGpt(options, out).run();

        // 2. Export: djl (TP=2) -> Hugging Face (unsharded), bit-exact.
        ConvertCheckpoints.convert(trained, exported, CheckpointFormat.HF, ParallelLayout.SINGLE, out);

        // 3. Check on a batch of token ids: the exported checkpoint is exactly the fine-tuned model.
        int vocab;
        try (HfCheckpoint original = HfCheckpoint.open(hf)) {
            vocab = original.config().vocabSize();
        }
        long[] ids = new long[2 * 16];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = (i * 37L + 11) % vocab;
        }
        float[] before = LogitsRunner.logits(hf, ids, 2, 1, false);
        float[] after = LogitsRunner.logits(trained, ids, 2, 1, false);
        float[] again = LogitsRunner.logits(exported, ids, 2, 1, false);
        return new Result(steps, maxDiff(again, after), maxDiff(after, before), exported);
    }

    static double maxDiff(float[] a, float[] b) {
        double m = 0;
        for (int i = 0; i < a.length; i++) {
            m = Math.max(m, Math.abs(a[i] - b[i]));
        }
        return m;
    }
}
