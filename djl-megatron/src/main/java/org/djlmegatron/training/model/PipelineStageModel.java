package org.djlmegatron.training.model;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.List;

/**
 * This rank's pipeline stage of a model: the first stage reads token ids, the others the hidden
 * states of the previous stage; the last computes the loss, the others hand their hidden states on.
 */
public interface PipelineStageModel extends TrainableModel {

    boolean isFirstStage();

    boolean isLastStage();

    /** The hidden states stages exchange for a micro-batch of {@code rows x seq} tokens. */
    Shape activationShape(int rows, int seq);

    DataType activationType();

    /**
     * Records this stage's forward on the rank's current tape: {@code hidden} is null on the first
     * stage, {@code ids} and {@code labels} are given everywhere; returns the scalar loss on the
     * last stage, the hidden states otherwise.
     */
    NDArray forwardStage(NDArray ids, NDArray hidden, NDArray labels);

    /**
     * Parameters held by both the first and the last stage (the tied word embedding, Megatron's
     * embedding group): their gradients are summed between the two, in this order on both; empty
     * elsewhere.
     */
    List<TrainableParameter> embeddingGroupParameters();

    /** Whether the gradient norm counts {@code p} on this rank (a tied copy counts on the first stage only). */
    boolean countedInNorm(TrainableParameter p);

    /** Model chunks on this rank (Megatron's virtual pipeline stages); 1 without interleaving. */
    default int chunks() {
        return 1;
    }

    /** Model chunk {@code c} (virtual stage {@code c p + rank}); this model itself without interleaving. */
    default PipelineStageModel chunk(int c) {
        if (c != 0) {
            throw new IllegalArgumentException("model chunk " + c + " of a rank with one chunk");
        }
        return this;
    }
}
