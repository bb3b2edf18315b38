package org.djlmegatron.pretrain;

import static org.djlmegatron.options.OptionChecks.exclusive;

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
        if (s.shardsParameters()) { // its gathers and reduce-scatters run on the compute thread
            exclusive(flag, true, "--overlap-grad-reduce", o.overlapGradReduce);
            exclusive(flag, true, "--overlap-param-gather", o.overlapParamGather);
        }
        if (s.shardsGradients()) {
            exclusive(flag, true, "--pipeline-model-parallel-size " + o.pipelineModelParallelSize,
                    o.pipelineModelParallelSize > 1);
            exclusive(flag, true, "--expert-model-parallel-size " + o.moe.expertModelParallelSize,
                    o.moe.expertModelParallelSize > 1);
        }
        o.useDistributedOptimizer = s.shardsOptimizer();
    }
}
