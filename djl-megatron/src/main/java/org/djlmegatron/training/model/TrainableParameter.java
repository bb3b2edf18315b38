package org.djlmegatron.training.model;

import ai.djl.ndarray.NDArray;

/**
 * What the trainer needs to know about one parameter on this rank.
 *
 * @param name a stable name (Megatron-Core state-dict name for our models)
 * @param array this rank's shard; its gradient accumulates in libtorch's {@code .grad}
 * @param tpDuplicate the same values live on every tensor-parallel rank (count it once in norms)
 * @param weightDecay whether decoupled weight decay applies (by default: tensors of rank >= 2)
 * @param expert an MoE expert's parameter: each expert-parallel rank holds different experts, so
 *     its gradient is summed over the expert-data-parallel group only
 * @param tpPartialGradient this rank's gradient is a partial sum over the tensor-parallel group
 *     (a replicated weight that saw only part of the sequence, heads or expert outputs): what
 *     {@link TrainableModel#reduceTensorParallelGradients} completes; the step completes it
 *     itself where it reduces over data parallelism first (Megatron's order: the fp32 main
 *     gradient, after the data-parallel reduction)
 */
public record TrainableParameter(String name, NDArray array, boolean tpDuplicate, boolean weightDecay,
        boolean expert, boolean tpPartialGradient) {

    /** A parameter whose gradient needs no tensor-parallel completion. */
    public TrainableParameter(String name, NDArray array, boolean tpDuplicate, boolean weightDecay, boolean expert) {
        this(name, array, tpDuplicate, weightDecay, expert, false);
    }

    /** A parameter every data-parallel rank holds. */
    public TrainableParameter(String name, NDArray array, boolean tpDuplicate, boolean weightDecay) {
        this(name, array, tpDuplicate, weightDecay, false);
    }
}
