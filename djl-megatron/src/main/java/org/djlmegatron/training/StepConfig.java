package org.djlmegatron.training;

import java.util.function.Supplier;
import org.djlmegatron.optim.FlatOptimizer;
import org.djlmegatron.optim.LearningRateSchedule;
import org.djlmegatron.training.buffers.ShardingStrategy;

/**
 * How the {@link DistributedStep} runs a step.
 *
 * @param microBatchSize sequences per micro-batch per rank
 * @param globalBatchSize sequences per optimizer step over all data-parallel ranks
 * @param optimizer creates the optimizer (one per rank)
 * @param schedule learning rate per update
 * @param clipGrad global gradient-norm clip (0: off)
 * @param distributedOptimizer shard fp32 masters and optimizer state over data parallelism (ZeRO-1)
 * @param bucketElements elements per gradient all-reduce bucket (non-distributed data parallelism)
 * @param scaler loss scaling (fp16) or none
 * @param sharding what each data-parallel rank keeps (ZeRO stage); null: {@code OPTIM} when
 *     {@code distributedOptimizer}, else {@code NO_SHARD}. A strategy that shards the optimizer
 *     turns {@code distributedOptimizer} on; {@code NO_SHARD} with it on is refused.
 */
public record StepConfig(
        int microBatchSize,
        int globalBatchSize,
        Supplier<FlatOptimizer> optimizer,
        LearningRateSchedule schedule,
        double clipGrad,
        boolean distributedOptimizer,
        long bucketElements,
        Supplier<LossScaler> scaler,
        ShardingStrategy sharding) {

    public StepConfig {
        if (sharding == null) {
            sharding = distributedOptimizer ? ShardingStrategy.OPTIM : ShardingStrategy.NO_SHARD;
        } else if (distributedOptimizer && !sharding.shardsOptimizer()) {
            throw new IllegalArgumentException("--use-distributed-optimizer conflicts with "
                    + "--data-parallel-sharding-strategy " + sharding.flagValue() + " (the distributed optimizer is optim)");
        }
        distributedOptimizer = sharding.shardsOptimizer();
    }

    /** Without a sharding strategy: the distributed optimizer's flag decides (ZeRO-1 or none). */
    public StepConfig(int microBatchSize, int globalBatchSize, Supplier<FlatOptimizer> optimizer,
            LearningRateSchedule schedule, double clipGrad, boolean distributedOptimizer, long bucketElements,
            Supplier<LossScaler> scaler) {
        this(microBatchSize, globalBatchSize, optimizer, schedule, clipGrad, distributedOptimizer, bucketElements,
                scaler, null);
    }

    /** Megatron's default bucket: 40M elements. */
    public static final long DEFAULT_BUCKET_ELEMENTS = 40_000_000L;

    /**
     * A builder with Megatron's defaults: AdamW (0.9, 0.999, 1e-8, weight decay 0.01), clipping at
     * 1.0, plain data-parallel all-reduce in 40M-element buckets, no loss scaling; the global batch
     * equals the micro-batch (one micro-batch per step at DP=1) unless set.
     */
    public static Builder builder(int microBatchSize, LearningRateSchedule schedule) {
        return new Builder(microBatchSize, schedule);
    }

    /** Builder of {@link StepConfig}. */
    public static final class Builder {
        private final int microBatchSize;
        private final LearningRateSchedule schedule;
        private Integer globalBatchSize;
        private Supplier<FlatOptimizer> optimizer = () -> new org.djlmegatron.optim.FlatAdamW(0.9, 0.999, 1e-8, 0.01);
        private double clipGrad = 1.0;
        private boolean distributedOptimizer;
        private long bucketElements = DEFAULT_BUCKET_ELEMENTS;
        private Supplier<LossScaler> scaler = LossScaler::none;
        private ShardingStrategy sharding;

        private Builder(int microBatchSize, LearningRateSchedule schedule) {
            this.microBatchSize = microBatchSize;
            this.schedule = schedule;
        }

        /** Sequences per optimizer step over all data-parallel ranks (a multiple of micro x DP). */
        public Builder globalBatchSize(int v) { globalBatchSize = v; return this; }
        /** Creates each rank's optimizer. */
        public Builder optimizer(Supplier<FlatOptimizer> v) { optimizer = v; return this; }
        /** Global gradient-norm clip; 0 turns clipping off. */
        public Builder clipGrad(double v) { clipGrad = v; return this; }
        /** ZeRO-1: fp32 masters and optimizer state sharded over data parallelism. */
        public Builder distributedOptimizer(boolean v) { distributedOptimizer = v; return this; }
        public Builder bucketElements(long v) { bucketElements = v; return this; }
        /** Loss scaling (fp16). */
        public Builder scaler(Supplier<LossScaler> v) { scaler = v; return this; }
        /** The ZeRO stage ({@code --data-parallel-sharding-strategy}); unset: from {@link #distributedOptimizer}. */
        public Builder sharding(ShardingStrategy v) { sharding = v; return this; }

        public StepConfig build() {
            return new StepConfig(microBatchSize, globalBatchSize != null ? globalBatchSize : microBatchSize,
                    optimizer, schedule, clipGrad, distributedOptimizer, bucketElements, scaler, sharding);
        }
    }

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
