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
 */
public record TrainableParameter(String name, NDArray array, boolean tpDuplicate, boolean weightDecay,
        boolean expert) {

    /** A parameter every data-parallel rank holds. */
    public TrainableParameter(String name, NDArray array, boolean tpDuplicate, boolean weightDecay) {
        this(name, array, tpDuplicate, weightDecay, false);
    }
}
