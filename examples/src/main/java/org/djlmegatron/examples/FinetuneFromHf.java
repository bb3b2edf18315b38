package org.djlmegatron.examples;

import ai.djl.Model;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.EasyTrain;
import ai.djl.training.listener.TrainingListener;
import ai.djl.translate.TranslateException;
import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.djlmegatron.bridge.CheckpointFormat;
import org.djlmegatron.bridge.LogitsRunner;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.bridge.hf.HfCheckpoint;
import org.djlmegatron.bridge.hf.HfDropout;
import org.djlmegatron.checkpoint.CheckpointListener;
import org.djlmegatron.launch.DistributedWorld;
import org.djlmegatron.comm.LaunchConfig;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.data.batches.MegatronPretrainingSampler;
import org.djlmegatron.data.batches.MockData;
import org.djlmegatron.data.batches.RowsDataset;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.optim.LearningRateSchedule;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.training.StepResult;
import org.djlmegatron.training.djl.MegatronOptimizer;
import org.djlmegatron.training.djl.ModelLoss;
import org.djlmegatron.training.djl.ParallelTrainer;
import org.djlmegatron.transformer.TransformerConfig;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Fine-tunes a Hugging Face checkpoint and exports the result as a Hugging Face checkpoint again:
 * DJL's {@code EasyTrain.fit} on two thread ranks (TP=2 with sequence parallelism) from the HF
 * weights, a {@code CheckpointListener} writing this project's checkpoint (what {@code pretrain-gpt
 * --save} writes), then {@code convert --to hf}. Checks that the exported
 * checkpoint computes exactly the fine-tuned model's logits, and that they moved away from the
 * original model's.
 *
 * <p>The data here is {@code MockData} (learnable synthetic sequences within the model's
 * vocabulary); for real text use a {@code SamplesSource} over a dataset made by
 * {@code preprocess-data} with the model's own tokenizer.
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

        // 1. Fine-tune the DJL way at TP=2 with sequence parallelism: each rank loads its shards of the HF
        //    weights into a GPTModel, EasyTrain.fit trains it through a ParallelTrainer, and the
        //    CheckpointListener saves the result in this project's training checkpoint format.
        List<StepResult> steps;
        try (HfCheckpoint checkpoint = HfCheckpoint.open(hf)) {
            TransformerConfig cfg = checkpoint.config();
            HfDropout dropout = HfDropout.read(hf);
            MockData data = new MockData(32, cfg.vocabSize(), 1234); // learnable sequences within the vocabulary
            out.printf(Locale.ROOT, "> fine-tuning %s at TP=2 + SP for %d steps%n", hf, trainIters);
            steps = DistributedWorld.run(RankGrid.create(2, 2, 1, 1, 1), LaunchConfig.singleNode(2, Duration.ofSeconds(120)),
                    ctx -> {
                        GPTModel gpt = new GPTModel(ctx, cfg, true);
                        gpt.setDropout(dropout.hidden(), dropout.attention(), 1234);
                        checkpoint.loadInto(gpt);
                        MegatronOptimizer optimizer = MegatronOptimizer.builder()
                                .optSchedule(new LearningRateSchedule(3e-3, 3e-4, 5, trainIters,
                                        LearningRateSchedule.DecayStyle.COSINE, 0, LearningRateSchedule.AnnealStyle.LINEAR))
                                .build();
                        DefaultTrainingConfig config = new DefaultTrainingConfig(new ModelLoss("loss", gpt::lossFromLogits))
                                .optOptimizer(optimizer)
                                .addTrainingListeners(TrainingListener.Defaults.basic())
                                .addTrainingListeners(new CheckpointListener(trained, 1234, "FinetuneFromHf " + hf));
                        ProcessGroup samples = ctx.group(GroupKind.DATA);
                        RowsDataset train = RowsDataset.builder(data, 8, trainIters)
                                .setSampling(new MegatronPretrainingSampler(8, samples.rank(), samples.size(), 0)).build();
                        try (Model model = Model.newInstance("finetune", ctx.manager().getDevice())) {
                            model.setBlock(gpt);
                            try (ParallelTrainer trainer = new ParallelTrainer(ctx, model, config, 4, 8)) {
                                EasyTrain.fit(trainer, 1, train, null);
                                return new ArrayList<>(trainer.results());
                            }
                        } catch (IOException e) {
                            throw new UncheckedIOException(e);
                        } catch (TranslateException e) {
                            throw new IllegalStateException(e);
                        }
                    }).get(0);
        }

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
