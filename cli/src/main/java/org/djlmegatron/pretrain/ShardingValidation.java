package org.djlmegatron.pretrain;

import static org.djlmegatron.options.OptionChecks.exclusive;

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
        if (s.shardsParameters()) {
            exclusive(flag, true, "--pipeline-model-parallel-size " + o.pipelineModelParallelSize,
                    o.pipelineModelParallelSize > 1); // units are layers of one model chunk, gathered on one tape
            exclusive(flag, true, "--expert-model-parallel-size " + o.moe.expertModelParallelSize,
                    o.moe.expertModelParallelSize > 1); // expert parameters shard over another group
        }
        o.useDistributedOptimizer = s.shardsOptimizer();
    }
}
