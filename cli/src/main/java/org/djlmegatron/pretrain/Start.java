package org.djlmegatron.pretrain;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.djlmegatron.bridge.CheckpointFormat;
import org.djlmegatron.bridge.convert.WeightSource;
import org.djlmegatron.checkpoint.TrainingCheckpoint;
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
        if (o.load == null || startsFresh(o)) {
            return new Start(null, null, null);
        }
        if (!Files.isDirectory(o.load)) {
            throw new IllegalArgumentException("--load " + o.load + ": not a directory");
        }
        if (TrainingCheckpoint.hasTrainingState(o.load)) {
            // the tracker's iteration, else the newest complete iter_* (a kill between the rename and the tracker)
            Path iter = TrainingCheckpoint.latest(o.load);
            CheckpointFormat format = CheckpointFormat.detect(iter);
            TrainingCheckpoint.TrainerState state = TrainingCheckpoint.readState(iter, o.readChecks());
            return new Start(format.open(iter, o.modelConfig, o.readChecks()), iter, state);
        }
        CheckpointFormat format = CheckpointFormat.detect(o.load);
        return new Start(format.open(o.load, o.modelConfig, o.readChecks()), null, null);
    }

    /**
     * Megatron's restart loop: {@code --load D --save D} with D missing or holding nothing but
     * hidden staging left by a killed first save starts from scratch (Megatron warns and starts
     * fresh when it finds no tracker). A {@code --load} elsewhere that holds nothing stays an error.
     */
    static boolean startsFresh(PretrainOptions o) {
        if (o.save == null || !o.load.toAbsolutePath().normalize().equals(o.save.toAbsolutePath().normalize())) {
            return false;
        }
        if (!Files.exists(o.load)) {
            return true;
        }
        if (!Files.isDirectory(o.load)) {
            return false;
        }
        try (Stream<Path> entries = Files.list(o.load)) {
            return entries.allMatch(p -> p.getFileName().toString().startsWith("."));
        } catch (IOException e) {
            throw new UncheckedIOException("--load " + o.load + ": cannot list", e);
        }
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
