package org.djlmegatron.pretrain;

import java.nio.file.Files;
import java.nio.file.Path;
import org.djlmegatron.bridge.CheckpointFormat;
import org.djlmegatron.bridge.convert.WeightSource;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Where training starts: from scratch, from a checkpoint's weights (any format), or resuming a
 * djl-megatron training checkpoint (weights, optimizer state, counters). A djl checkpoint without
 * training state (made by {@code convert}) is a weights-only start.
 *
 * @param weights weights to load, or null
 * @param iterDir the resumed iteration directory, or null
 * @param resume the trainer state to resume, or null
 */
record Start(WeightSource weights, Path iterDir, TrainingCheckpoint.TrainerState resume) implements AutoCloseable {

    static Start of(PretrainOptions o) {
        if (o.load == null) {
            return new Start(null, null, null);
        }
        if (!Files.isDirectory(o.load)) {
            throw new IllegalArgumentException("--load " + o.load + ": not a directory");
        }
        CheckpointFormat format = CheckpointFormat.detect(o.load);
        if (format == CheckpointFormat.DJL && TrainingCheckpoint.hasTrainingState(o.load)) {
            Path iter = TrainingCheckpoint.latest(o.load);
            TrainingCheckpoint.TrainerState state = TrainingCheckpoint.readState(iter);
            return new Start(format.open(iter, o.modelConfig), iter, state);
        }
        return new Start(format.open(o.load, o.modelConfig), null, null);
    }

    TransformerConfig config() {
        return weights == null ? null : weights.config();
    }

    @Override
    public void close() {
        if (weights != null) {
            weights.close();
        }
    }
}
