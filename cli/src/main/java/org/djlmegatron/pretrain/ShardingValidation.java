package org.djlmegatron.pretrain;

import org.djlmegatron.options.InvalidOptionException;
import org.djlmegatron.training.buffers.ShardingStrategy;

/**
 * {@code --data-parallel-sharding-strategy} against the other flags, before anything is built:
 * where each ZeRO stage can run (docs/training.md), each refusal naming both flags.
 */
final class ShardingValidation {

    private ShardingValidation() {}

    /**
     * Checks the strategy and records that it shards the optimizer in
     * {@code useDistributedOptimizer}, which the checkpoint code reads for the optimizer's layout.
     */
    static void validate(PretrainOptions o) {
        ShardingStrategy s = o.sharding();
        String flag = "--data-parallel-sharding-strategy " + s.flagValue();
        if (s.shardsParameters() && o.pipelineModelParallelSize > 1) { // as Megatron-FSDP, which raises for PP > 1
            throw new InvalidOptionException("--pipeline-model-parallel-size", "1 with " + flag + " (ZeRO-3: "
                    + "Megatron-FSDP does not run under pipeline parallelism either; optim_grads does)", o.pipelineModelParallelSize);
        }
        o.useDistributedOptimizer = s.shardsOptimizer();
    }
}
