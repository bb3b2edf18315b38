package org.djlmegatron.bridge;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.stream.Collectors;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.convert.ReadChecks;
import org.djlmegatron.bridge.convert.WeightSource;
import org.djlmegatron.bridge.djl.DjlMetadata;
import org.djlmegatron.bridge.djl.DjlWeightSource;
import org.djlmegatron.bridge.export.HfWeightSource;
import org.djlmegatron.bridge.megatron.DistWeightSource;
import org.djlmegatron.bridge.megatron.IterationTracker;
import org.djlmegatron.bridge.megatron.LegacyWeightSource;

/** The checkpoint formats this bridge reads and writes, with their command-line names. */
public enum CheckpointFormat {
    /** Hugging Face: {@code config.json} and safetensors. */
    HF("hf"),
    /** Megatron-LM's legacy {@code torch} format: one {@code model_optim_rng.pt} per rank. */
    MEGATRON("megatron"),
    /** Megatron-LM's {@code torch_dist} format: a PyTorch distributed checkpoint. */
    MEGATRON_DIST("megatron-dist"),
    /** This project's own: per-rank safetensors and {@code metadata.json}. */
    DJL("djl");

    private final String cliName;

    CheckpointFormat(String cliName) {
        this.cliName = cliName;
    }

    public String cliName() {
        return cliName;
    }

    /** The format of a command-line name ({@code hf}, {@code megatron}, {@code megatron-dist}, {@code djl}). */
    public static CheckpointFormat parse(String name) {
        for (CheckpointFormat f : values()) {
            if (f.cliName.equals(name)) {
                return f;
            }
        }
        throw new IllegalArgumentException("unknown checkpoint format '" + name + "'; expected one of "
                + Arrays.stream(values()).map(CheckpointFormat::cliName).collect(Collectors.joining(", ")));
    }

    /** Recognises a checkpoint directory (a root with a tracker, or an iteration directory). */
    public static CheckpointFormat detect(Path dir) {
        if (!Files.isDirectory(dir)) {
            throw new CheckpointException(dir + ": not a directory");
        }
        if (HfWeightSource.isHf(dir)) {
            return HF;
        }
        if (IterationTracker.isCheckpoint(dir)) {
            Path iter = IterationTracker.iterationDir(dir);
            if (DjlMetadata.isDjl(iter)) {
                return DJL;
            }
            if (DistWeightSource.isDist(iter)) {
                return MEGATRON_DIST;
            }
            if (LegacyWeightSource.holdsRankFiles(iter)) {
                return MEGATRON;
            }
        }
        throw new CheckpointException(dir + ": not a recognised checkpoint: expected config.json (hf), or "
                + IterationTracker.TRACKER + " / an iter_XXXXXXX directory holding mp_rank_*/"
                + LegacyWeightSource.FILE + " (megatron), .metadata (megatron-dist) or " + DjlMetadata.FILE + " (djl)");
    }

    /**
     * Opens a checkpoint of this format.
     *
     * @param modelConfig Megatron arguments as JSON for Megatron checkpoints without {@code args};
     *     may be null
     */
    public WeightSource open(Path dir, Path modelConfig) {
        return open(dir, modelConfig, ReadChecks.ALL);
    }

    /**
     * As {@link #open(Path, Path)}; {@code checks} says whether recorded checksums are verified
     * (only this project's format records them).
     */
    public WeightSource open(Path dir, Path modelConfig, ReadChecks checks) {
        return switch (this) {
            case HF -> HfWeightSource.open(dir);
            case MEGATRON -> LegacyWeightSource.open(dir, modelConfig);
            case MEGATRON_DIST -> DistWeightSource.open(dir, modelConfig);
            case DJL -> DjlWeightSource.open(dir, checks);
        };
    }
}
