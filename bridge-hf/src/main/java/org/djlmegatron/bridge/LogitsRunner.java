package org.djlmegatron.bridge;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.jni.JniUtils;
import java.nio.file.Path;
import java.util.List;
import java.util.function.Consumer;
import org.djlmegatron.bridge.convert.CheckpointLoader;
import org.djlmegatron.engine.ThreadBudget;
import org.djlmegatron.bridge.convert.ReadChecks;
import org.djlmegatron.bridge.convert.WeightSource;
import org.djlmegatron.bridge.hf.HfCheckpoint;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.pipeline.PipelineLayout;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Runs a checkpoint's forward pass on thread ranks at a tensor-, pipeline- and expert-parallel
 * size and returns the full-vocabulary logits. The layout is validated against the model before any weight is read.
 * Any format of {@link CheckpointFormat} is accepted (detected from the directory).
 */
public final class LogitsRunner {

    private LogitsRunner() {}

    /**
     * Logits {@code [batch, seq, vocab]} (fp32) for {@code ids [batch, seq]} (int64 values).
     *
     * @param checkpoint a Hugging Face checkpoint directory
     * @param ids token ids, row-major
     * @param batch rows of {@code ids}
     * @param tp tensor-parallel size (threads in this JVM)
     * @param sequenceParallel split activations along the sequence between TP regions
     */
    public static float[] logits(Path checkpoint, long[] ids, int batch, int tp, boolean sequenceParallel) {
        return logits(checkpoint, null, ids, batch, tp, sequenceParallel);
    }

    /**
     * As {@link #logits(Path, long[], int, int, boolean)} for a checkpoint of any format.
     *
     * @param modelConfig Megatron arguments as JSON, for Megatron checkpoints without {@code args}
     *     (may be null)
     */
    public static float[] logits(Path checkpoint, Path modelConfig, long[] ids, int batch, int tp,
            boolean sequenceParallel) {
        return logits(checkpoint, modelConfig, ReadChecks.ALL, ids, batch, tp, 1, sequenceParallel);
    }

    /** As {@link #logits(Path, Path, long[], int, int, boolean)} with the given checksum and finiteness checks. */
    public static float[] logits(Path checkpoint, Path modelConfig, ReadChecks checks, long[] ids, int batch, int tp,
            boolean sequenceParallel) {
        return logits(checkpoint, modelConfig, checks, ids, batch, tp, 1, sequenceParallel);
    }

    /** On {@code tp x ep} thread ranks (see below), with every read check. */
    public static float[] logits(Path checkpoint, Path modelConfig, long[] ids, int batch, int tp, int ep,
            boolean sequenceParallel) {
        return logits(checkpoint, modelConfig, ReadChecks.ALL, ids, batch, tp, ep, sequenceParallel);
    }

    /**
     * On {@code tp x ep} thread ranks: each expert-parallel rank holds num_experts/EP
     * experts and runs the same ids, the tokens crossing to their experts' ranks (EP > 1 with
     * TP > 1 needs sequence parallelism, Megatron's rule).
     */
    public static float[] logits(Path checkpoint, Path modelConfig, ReadChecks checks, long[] ids, int batch, int tp,
            int ep, boolean sequenceParallel) {
        return logits(checkpoint, modelConfig, checks, ids, batch, tp, ep, 1, sequenceParallel);
    }

    /**
     * On {@code tp x pp x ep} thread ranks: with {@code pp > 1} the decoder layers are split evenly
     * over {@code pp} stages (Megatron's split) and each row of {@code ids} is one micro-batch of
     * Megatron's forward-only schedule; the last stage's logits are returned.
     */
    public static float[] logits(Path checkpoint, Path modelConfig, ReadChecks checks, long[] ids, int batch, int tp,
            int ep, int pp, boolean sequenceParallel) {
        if (pp < 1) {
            throw new IllegalArgumentException("--pp must be >= 1, got " + pp);
        }
        if (ep < 1) {
            throw new IllegalArgumentException("--ep must be >= 1, got " + ep);
        }
        if (ep > 1 && tp > 1 && !sequenceParallel) {
            throw new IllegalArgumentException("--ep " + ep + " with --tp " + tp
                    + " needs --sequence-parallel (Megatron's rule for expert and tensor parallelism)");
        }
        CheckpointFormat format = CheckpointFormat.detect(checkpoint);
        if (format == CheckpointFormat.HF) {
            // each rank reads only the bytes of its own shards
            try (HfCheckpoint ckpt = HfCheckpoint.open(checkpoint)) {
                return run(ckpt.config(), model -> ckpt.loadInto(model, checks), ids, batch, tp, ep, pp,
                        sequenceParallel);
            }
        }
        try (WeightSource source = format.open(checkpoint, modelConfig, checks)) {
            return run(source.config(), model -> CheckpointLoader.loadInto(source, model, checks), ids, batch, tp, ep,
                    pp, sequenceParallel);
        }
    }

    private static float[] run(TransformerConfig cfg, Consumer<GPTModel> load, long[] ids, int batch, int tp, int ep,
            int pp, boolean sequenceParallel) {
        RankGrid grid = RankGrid.create(tp * pp * ep, tp, pp, 1, ep);
        grid.validateModel(cfg.numAttentionHeads(), cfg.numQueryGroups(), cfg.vocabSize(), cfg.numExperts());
        if (cfg.numLayers() % pp != 0) {
            throw new IllegalArgumentException("--pp " + pp + " does not divide the checkpoint's " + cfg.numLayers()
                    + " decoder layers (stages hold equal numbers of layers)");
        }
        PipelineLayout stages = PipelineLayout.of(cfg.numLayers(), pp, 1, null, null);
        checkIds(ids, batch, cfg, tp, sequenceParallel);
        ThreadBudget.applyFor(null, tp * pp); // cores / rank threads, or OMP_NUM_THREADS
        int seq = ids.length / batch;
        List<float[]> out = LocalWorld.run(grid, ctx -> {
            JniUtils.setGradMode(false);
            int stage = grid.ppRank(ctx.rank());
            GPTModel model = new GPTModel(ctx, cfg, sequenceParallel, stages.firstLayer(stage, 0),
                    stages.endLayer(stage, 0));
            load.accept(model);
            NDManager m = ctx.manager();
            NDArray logits = pp == 1 ? model.gatherLogits(model.apply(m.create(ids, new Shape(batch, seq))))
                    : PipelinedLogits.run(ctx.group(GroupKind.PIPELINE), model, ids, batch, m);
            boolean reporter = stage == pp - 1 && grid.tpRank(ctx.rank()) == 0 && grid.dpRank(ctx.rank()) == 0;
            return reporter ? logits.toType(DataType.FLOAT32, false).toFloatArray() : null;
        });
        return out.stream().filter(java.util.Objects::nonNull).findFirst()
                .orElseThrow(() -> new IllegalStateException("no rank of the last pipeline stage returned logits"));
    }

    private static void checkIds(long[] ids, int batch, TransformerConfig cfg, int tp, boolean sp) {
        if (batch < 1 || ids.length % batch != 0 || ids.length == 0) {
            throw new IllegalArgumentException("input ids: " + ids.length + " values do not form "
                    + batch + " non-empty rows");
        }
        long seq = ids.length / batch;
        if (sp && seq % tp != 0) {
            throw new IllegalArgumentException("sequence length " + seq
                    + " is not divisible by the tensor-parallel size " + tp + " (--sequence-parallel)");
        }
        for (long id : ids) {
            if (id < 0 || id >= cfg.vocabSize()) {
                throw new IllegalArgumentException("input ids: token id " + id
                        + " is outside the vocabulary [0, " + cfg.vocabSize() + ")");
            }
        }
    }
}
