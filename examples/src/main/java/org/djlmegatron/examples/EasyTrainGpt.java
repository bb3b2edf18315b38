package org.djlmegatron.examples;

import ai.djl.Model;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.EasyTrain;
import ai.djl.training.listener.TrainingListener;
import ai.djl.translate.TranslateException;
import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
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

/**
 * A DJL user's training code for a tensor-parallel GPT: a {@link Model} holding the rank's
 * {@link GPTModel}, a {@link DefaultTrainingConfig} with DJL's logging listeners, our optimizer and
 * the model's own loss, and {@code EasyTrain.fit}, on 2 thread ranks (TP=2) reading mock data
 * through Megatron's sampler.
 *
 * <pre>
 * bin/example EasyTrainGpt --train-iters 50
 * </pre>
 */
public final class EasyTrainGpt {

    static final int MICRO_BATCH = 4;
    static final int GLOBAL_BATCH = 8;
    static final int SEQ = 32;

    private EasyTrainGpt() {}

    public static void main(String[] args) {
        long iters = 50;
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--train-iters") && i + 1 < args.length) {
                iters = Long.parseLong(args[++i]);
            } else {
                System.err.println("usage: bin/example EasyTrainGpt [--train-iters N (default 50)]; unknown: " + args[i]);
                System.exit(2);
            }
        }
        List<StepResult> steps = run(iters, System.out);
        System.out.printf(Locale.ROOT, "loss %.3f -> %.3f over %d steps%n", steps.get(0).loss(),
                steps.get(steps.size() - 1).loss(), steps.size());
    }

    /** Trains for {@code iters} steps at TP=2; returns rank 0's step results. */
    public static List<StepResult> run(long iters, PrintStream out) {
        TransformerConfig cfg = TransformerConfig.builder().numLayers(2).hiddenSize(64).numAttentionHeads(4)
                .kvChannels(16).ffnHiddenSize(256).vocabSize(128).maxPositionEmbeddings(SEQ).build();
        MockData data = new MockData(SEQ, cfg.vocabSize(), 1234);
        RankGrid grid = RankGrid.create(2, 2, 1, 1, 1); // 2 ranks, tensor-parallel size 2
        out.printf(Locale.ROOT, "> %s, %d iterations of global batch %d, micro-batch %d%n", grid, iters, GLOBAL_BATCH,
                MICRO_BATCH);
        return DistributedWorld.run(grid, LaunchConfig.singleNode(2, Duration.ofSeconds(120)), ctx -> {
            GPTModel gpt = new GPTModel(ctx, cfg, false);
            gpt.initializeRandom(1234, 0.02f);
            MegatronOptimizer optimizer = MegatronOptimizer.builder()
                    .optSchedule(new LearningRateSchedule(3e-3, 3e-4, 5, iters, LearningRateSchedule.DecayStyle.COSINE,
                            0, LearningRateSchedule.AnnealStyle.LINEAR))
                    .optClipGradNorm(1.0)
                    .build();
            DefaultTrainingConfig config = new DefaultTrainingConfig(new ModelLoss("loss", gpt::lossFromLogits))
                    .optOptimizer(optimizer)
                    // every rank runs the same listeners (the loss evaluator is collective); rank 0 logs
                    .addTrainingListeners(ctx.rank() == 0 ? TrainingListener.Defaults.logging()
                            : TrainingListener.Defaults.basic());
            ProcessGroup samples = ctx.group(GroupKind.DATA);
            RowsDataset train = RowsDataset.builder(data, GLOBAL_BATCH, iters)
                    .setSampling(new MegatronPretrainingSampler(GLOBAL_BATCH, samples.rank(), samples.size(), 0))
                    .build();
            try (Model model = Model.newInstance("gpt", ctx.manager().getDevice())) {
                model.setBlock(gpt);
                try (ParallelTrainer trainer = new ParallelTrainer(ctx, model, config, MICRO_BATCH, GLOBAL_BATCH)) {
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
}
