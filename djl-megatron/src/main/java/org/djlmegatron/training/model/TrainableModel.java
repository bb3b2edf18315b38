package org.djlmegatron.training.model;

import ai.djl.ndarray.NDArray;
import java.util.List;

/** A model the {@link org.djlmegatron.training.DistributedStep} can train: its parameters on this rank and its loss. */
public interface TrainableModel {

    /** Every trainable parameter of this rank, in a fixed order (the same on all DP replicas). */
    List<TrainableParameter> trainableParameters();

    /**
     * Mean loss over the non-ignored labels of one micro-batch (scalar, fp32), recording the
     * graph on the rank's tape.
     */
    NDArray loss(NDArray inputs, NDArray labels);

    /**
     * After backward: completes gradients that are partial on each tensor-parallel rank. The step
     * over contiguous buffers with 16-bit weights does not call it: it completes the parameters
     * flagged {@link TrainableParameter#tpPartialGradient()} on the fp32 main gradient, after the
     * data-parallel reduction, so a model's flags must name the same parameters.
     */
    void reduceTensorParallelGradients();
}
