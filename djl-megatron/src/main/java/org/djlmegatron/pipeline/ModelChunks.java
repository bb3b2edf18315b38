package org.djlmegatron.pipeline;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.training.model.PipelineStageModel;
import org.djlmegatron.training.model.TrainableParameter;

/**
 * One pipeline rank's model chunks under interleaving (Megatron's list of model chunks per rank):
 * chunk {@code c} is virtual stage {@code c p + rank}. The trainer sees one model (every chunk's
 * parameters, in chunk order) and runs each pass on {@link #chunk}.
 */
public final class ModelChunks implements PipelineStageModel {

    private final List<PipelineStageModel> chunks;

    public ModelChunks(List<? extends PipelineStageModel> chunks) {
        if (chunks.isEmpty()) {
            throw new IllegalArgumentException("a rank needs at least one model chunk");
        }
        this.chunks = List.copyOf(chunks);
    }

    @Override
    public int chunks() {
        return chunks.size();
    }

    @Override
    public PipelineStageModel chunk(int c) {
        return chunks.get(c);
    }

    @Override
    public List<TrainableParameter> trainableParameters() {
        List<TrainableParameter> all = new ArrayList<>();
        chunks.forEach(c -> all.addAll(c.trainableParameters()));
        return all;
    }

    @Override
    public NDArray loss(NDArray inputs, NDArray labels) {
        throw new IllegalStateException("model chunks run their passes one chunk at a time (chunk(c).forwardStage)");
    }

    @Override
    public void reduceTensorParallelGradients() {
        chunks.forEach(PipelineStageModel::reduceTensorParallelGradients);
    }

    /** Whether this rank holds the model's first virtual stage (chunk 0 of rank 0). */
    @Override
    public boolean isFirstStage() {
        return chunks.get(0).isFirstStage();
    }

    /** Whether this rank holds the model's last virtual stage (the last chunk of the last rank). */
    @Override
    public boolean isLastStage() {
        return chunks.get(chunks.size() - 1).isLastStage();
    }

    @Override
    public Shape activationShape(int rows, int seq) {
        return chunks.get(0).activationShape(rows, seq);
    }

    @Override
    public DataType activationType() {
        return chunks.get(0).activationType();
    }

    @Override
    public NDArray forwardStage(NDArray ids, NDArray hidden, NDArray labels) {
        throw new IllegalStateException("model chunks run their passes one chunk at a time (chunk(c).forwardStage)");
    }

    @Override
    public List<TrainableParameter> embeddingGroupParameters() {
        List<TrainableParameter> shared = new ArrayList<>();
        chunks.forEach(c -> shared.addAll(c.embeddingGroupParameters()));
        return shared;
    }

    @Override
    public boolean countedInNorm(TrainableParameter p) {
        for (PipelineStageModel c : chunks) { // names are global: one chunk holds each
            if (c.trainableParameters().stream().anyMatch(q -> q.name().equals(p.name()))) {
                return c.countedInNorm(p);
            }
        }
        throw new IllegalArgumentException("parameter " + p.name() + " belongs to none of this rank's model chunks");
    }
}
