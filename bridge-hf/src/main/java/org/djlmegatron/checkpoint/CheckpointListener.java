package org.djlmegatron.checkpoint;

import ai.djl.training.Trainer;
import ai.djl.training.listener.TrainingListenerAdapter;
import java.nio.file.Path;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.training.djl.ParallelTrainer;

/**
 * A DJL training listener that saves {@link TrainingCheckpoint}s (the format {@code pretrain-gpt
 * --save} writes and {@code --load} resumes) at the end of every epoch, and at the end of training
 * if steps ran since the last save. Every rank's {@link ParallelTrainer} must carry one (saving is
 * collective); {@code args} is recorded in {@code trainer_state.json} as the run's command line.
 */
public final class CheckpointListener extends TrainingListenerAdapter {

    private final Path root;
    private final long seed;
    private final String args;
    private long savedIteration = -1;

    public CheckpointListener(Path root, long seed, String args) {
        this.root = root;
        this.seed = seed;
        this.args = args;
    }

    @Override
    public void onEpoch(Trainer trainer) {
        save(trainer);
    }

    @Override
    public void onTrainingEnd(Trainer trainer) {
        save(trainer);
    }

    private void save(Trainer trainer) {
        if (!(trainer instanceof ParallelTrainer t) || !(t.getModel().getBlock() instanceof GPTModel model)) {
            throw new IllegalArgumentException("CheckpointListener needs a ParallelTrainer training a GPTModel, found "
                    + trainer.getClass().getName());
        }
        var engine = t.engine();
        if (engine.iteration() == savedIteration || engine.iteration() == 0) {
            return;
        }
        int dpSize = t.rankContext().group(GroupKind.DATA_CONTEXT).size();
        TrainingCheckpoint.TrainerState state = new TrainingCheckpoint.TrainerState(engine.iteration(), engine.updates(),
                engine.iteration() * t.globalBatchSize(), t.globalBatchSize(), dpSize,
                t.megatronOptimizer().distributedOptimizer(), engine.layout().paddedSize(), engine.scaler().state(),
                seed, args);
        TrainingCheckpoint.save(root, t.rankContext(), model, engine, state);
        savedIteration = engine.iteration();
    }
}
