package org.djlmegatron.pretrain;

import ai.djl.Model;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.EasyTrain;
import ai.djl.training.listener.TrainingListener;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.data.batches.MegatronPretrainingSampler;
import org.djlmegatron.data.batches.RowsDataset;
import org.djlmegatron.data.batches.RowsSource;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.training.StepResult;
import org.djlmegatron.training.djl.MegatronOptimizer;
import org.djlmegatron.training.djl.ModelLoss;
import org.djlmegatron.training.djl.ParallelTrainer;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * One rank of a {@code pretrain-gpt} run (model, dropout, initialisation, optimizer, schedule,
 * clipping, distributed optimizer, loss scaling, Megatron's sampler) written as a DJL user writes
 * it: a {@link Model}, a training config with listeners, {@link EasyTrain#fit}. Shared by
 * {@code bench-easytrain} and the test that holds it to {@code pretrain-gpt}'s trajectory, so the
 * benchmark times exactly the run the test proves.
 */
public final class EasyTrainRun {

    private EasyTrainRun() {}

    /** Trains this rank for {@code o.trainIters} iterations on {@code data}; returns its step results. */
    public static List<StepResult> onRank(RankContext ctx, PretrainOptions o, RowsSource data,
            List<TrainingListener> listeners) {
        TransformerConfig cfg = o.modelConfig();
        double[] dropout = o.activations.dropout(null);
        int gbs = o.globalBatchSize;
        GPTModel gpt = new GPTModel(ctx, cfg, false);
        gpt.setDropout(dropout[0], dropout[1], o.seed);
        gpt.initializeRandom(o.seed, o.initMethodStd);
        MegatronOptimizer optimizer = MegatronOptimizer.builder().optOptimizer(o.optimizerFactory())
                .optSchedule(o.schedule()).optClipGradNorm(o.clipGrad)
                .optDistributedOptimizer(o.useDistributedOptimizer).optScaler(o.scaler()).build();
        DefaultTrainingConfig config = new DefaultTrainingConfig(new ModelLoss("loss", gpt::lossFromLogits))
                .optOptimizer(optimizer);
        listeners.forEach(config::addTrainingListeners);
        ProcessGroup samples = ctx.group(GroupKind.DATA);
        RowsDataset dataset = RowsDataset.builder(data, gbs, o.trainIters)
                .setSampling(new MegatronPretrainingSampler(gbs, samples.rank(), samples.size(), 0)).build();
        try (Model model = Model.newInstance("gpt", ctx.manager().getDevice())) {
            model.setBlock(gpt);
            try (ParallelTrainer trainer = new ParallelTrainer(ctx, model, config, o.microBatchSize, gbs)) {
                EasyTrain.fit(trainer, 1, dataset, null);
                return new ArrayList<>(trainer.results());
            }
        } catch (IOException | ai.djl.translate.TranslateException e) {
            throw new IllegalStateException(e);
        }
    }
}
