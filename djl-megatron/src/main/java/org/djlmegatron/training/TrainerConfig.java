package org.djlmegatron.training;

import java.util.function.Supplier;
import org.djlmegatron.optim.LearningRateSchedule;
import org.djlmegatron.optim.Optimizer;

/**
 * How the {@link Trainer} runs a step.
 *
 * @param microBatchSize sequences per micro-batch per rank
 * @param globalBatchSize sequences per optimizer step over all data-parallel ranks
 * @param optimizer creates the optimizer (one per rank)
 * @param schedule learning rate per update
 * @param clipGrad global gradient-norm clip (0: off)
 * @param distributedOptimizer shard fp32 masters and optimizer state over data parallelism (ZeRO-1)
 * @param bucketElements elements per gradient all-reduce bucket (non-distributed data parallelism)
 * @param scaler loss scaling (fp16) or none
 */
public record TrainerConfig(
        int microBatchSize,
        int globalBatchSize,
        Supplier<Optimizer> optimizer,
        LearningRateSchedule schedule,
        double clipGrad,
        boolean distributedOptimizer,
        long bucketElements,
        Supplier<LossScaler> scaler) {

    /** Megatron's default bucket: 40M elements. */
    public static final long DEFAULT_BUCKET_ELEMENTS = 40_000_000L;

    /** Micro-batches per step on each rank, checking that the batch sizes fit the DP size. */
    public int microBatchesPerStep(int dpSize) {
        long perStep = (long) microBatchSize * dpSize;
        if (globalBatchSize % perStep != 0) {
            throw new IllegalArgumentException("global batch size " + globalBatchSize
                    + " is not divisible by micro batch size " + microBatchSize + " x data-parallel size " + dpSize);
        }
        return (int) (globalBatchSize / perStep);
    }
}
