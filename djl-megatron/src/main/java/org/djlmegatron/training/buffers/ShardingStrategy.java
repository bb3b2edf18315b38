package org.djlmegatron.training.buffers;

import java.util.Locale;

/**
 * What each data-parallel rank keeps of the model state between steps and micro-batches
 * (Megatron's {@code --data-parallel-sharding-strategy}, the ZeRO stages): the rest lives, in
 * shards of 1/DP, on the other ranks of the data-parallel group.
 */
public enum ShardingStrategy {
    /** ZeRO-0: every rank keeps all parameters, gradients and optimizer state (plain data parallelism). */
    NO_SHARD,
    /** ZeRO-1 ({@code --use-distributed-optimizer}): fp32 masters and optimizer state sharded. */
    OPTIM,
    /**
     * ZeRO-2: also the gradients; each micro-batch's gradients are reduce-scattered into this
     * rank's fp32 main-gradient shard and the full-size gradients dropped.
     */
    OPTIM_GRADS,
    /** ZeRO-3: also the parameters, gathered per layer around its forward and backward ({@link ParameterShards}). */
    OPTIM_GRADS_PARAMS;

    /** The flag's spelling: {@code no_shard}, {@code optim}, {@code optim_grads}, {@code optim_grads_params}. */
    public String flagValue() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** Whether fp32 masters and optimizer state are sharded (the distributed optimizer). */
    public boolean shardsOptimizer() {
        return this != NO_SHARD;
    }

    /** Whether only this rank's shard of the gradients is kept between micro-batches. */
    public boolean shardsGradients() {
        return this == OPTIM_GRADS || this == OPTIM_GRADS_PARAMS;
    }

    /** Whether only this rank's shard of the parameters is kept outside a layer's passes. */
    public boolean shardsParameters() {
        return this == OPTIM_GRADS_PARAMS;
    }
}
