package org.djlmegatron.training.djl;

import ai.djl.ndarray.NDArray;
import java.util.function.Supplier;
import org.djlmegatron.optim.FlatAdamW;
import org.djlmegatron.optim.FlatOptimizer;
import org.djlmegatron.optim.LearningRateSchedule;
import org.djlmegatron.training.LossScaler;
import org.djlmegatron.training.StepConfig;

/**
 * Our optimizers as a DJL {@link ai.djl.training.optimizer.Optimizer}, for
 * {@code DefaultTrainingConfig.optOptimizer}: the optimizer (AdamW or SGD over flat fp32 masters),
 * Megatron's schedule as a {@link ScheduleTracker}, gradient clipping, the distributed optimizer
 * (ZeRO-1), the data-parallel bucket size and loss scaling. {@link ParallelTrainer} runs them in
 * its distributed step; they update flat masters, not one parameter at a time, so DJL's stock
 * trainer (which calls {@link #update}) cannot use them.
 */
public final class MegatronOptimizer extends ai.djl.training.optimizer.Optimizer {

    private final Supplier<FlatOptimizer> optimizer;
    private final ScheduleTracker learningRate;
    private final double clip;
    private final boolean distributed;
    private final long bucketElements;
    private final Supplier<LossScaler> scaler;

    private MegatronOptimizer(Builder b) {
        super(b);
        if (b.learningRate == null) {
            throw new IllegalArgumentException("MegatronOptimizer: no learning rate; give optLearningRateTracker");
        }
        optimizer = b.optimizer;
        learningRate = b.learningRate;
        clip = b.clip;
        distributed = b.distributed;
        bucketElements = b.bucketElements;
        scaler = b.scaler;
    }

    /** A builder with Megatron's defaults: AdamW (0.9, 0.999, 1e-8, weight decay 0.01), clip 1.0, no ZeRO-1. */
    public static Builder builder() {
        return new Builder();
    }

    /** The engine's configuration for {@code microBatchSize} and {@code globalBatchSize}. */
    public StepConfig trainerConfig(int microBatchSize, int globalBatchSize) {
        return new StepConfig(microBatchSize, globalBatchSize, optimizer, learningRate.schedule(), clip,
                distributed, bucketElements, scaler);
    }

    /** Whether fp32 masters and optimizer state are sharded over data parallelism. */
    public boolean distributedOptimizer() {
        return distributed;
    }

    @Override
    public void update(String parameterId, NDArray weight, NDArray grad) {
        throw new UnsupportedOperationException("MegatronOptimizer updates flat fp32 masters in ParallelTrainer's "
                + "distributed step, not parameter " + parameterId + " alone; train with ParallelTrainer");
    }

    /** Builder of {@link MegatronOptimizer}. */
    public static final class Builder extends OptimizerBuilder<Builder> {
        private Supplier<FlatOptimizer> optimizer = () -> new FlatAdamW(0.9, 0.999, 1e-8, 0.01);
        private ScheduleTracker learningRate;
        private double clip = 1.0;
        private boolean distributed;
        private long bucketElements = StepConfig.DEFAULT_BUCKET_ELEMENTS;
        private Supplier<LossScaler> scaler = LossScaler::none;

        private Builder() {}

        /** Creates each rank's optimizer ({@link FlatAdamW}, {@link org.djlmegatron.optim.FlatSgd}). */
        public Builder optOptimizer(Supplier<FlatOptimizer> v) { optimizer = v; return this; }
        /** Megatron's schedule, as a tracker. */
        public Builder optLearningRateTracker(ScheduleTracker v) { learningRate = v; return this; }
        /** Megatron's schedule. */
        public Builder optSchedule(LearningRateSchedule v) { learningRate = new ScheduleTracker(v); return this; }
        /** {@code --clip-grad}: global gradient-norm clip; 0 turns it off. */
        public Builder optClipGradNorm(double v) { clip = v; return this; }
        /** {@code --use-distributed-optimizer}. */
        public Builder optDistributedOptimizer(boolean v) { distributed = v; return this; }
        /** {@code --ddp-bucket-size}. */
        public Builder optBucketElements(long v) { bucketElements = v; return this; }
        /** Loss scaling ({@code --fp16}'s dynamic scaler, or {@link LossScaler#none}). */
        public Builder optScaler(Supplier<LossScaler> v) { scaler = v; return this; }

        public MegatronOptimizer build() {
            return new MegatronOptimizer(this);
        }

        @Override
        protected Builder self() {
            return this;
        }
    }
}
