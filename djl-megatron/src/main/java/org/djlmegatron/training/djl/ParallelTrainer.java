package org.djlmegatron.training.djl;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.metric.Metrics;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.pytorch.jni.JniUtils;
import ai.djl.training.GradientCollector;
import ai.djl.training.ParameterStore;
import ai.djl.training.Trainer;
import ai.djl.training.TrainingConfig;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import org.djlmegatron.autograd.Scalar;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.training.StepResult;
import org.djlmegatron.training.model.TrainableModel;

/**
 * DJL's {@link Trainer} for one rank of the grid, so that {@code EasyTrain.fit(trainer, epochs,
 * train, validate)} trains a parallel model unchanged. Each DJL batch is this rank's share of one
 * global batch (rows {@code micro-batch size x micro-batches per step}); DJL splits a batch over
 * {@link #getDevices()}, which here lists the rank's device once per micro-batch, so each split is
 * one micro-batch. The gradient collector is the rank's tape (backward with the loss scale over
 * the micro-batches), and {@link #step()} is Megatron's distributed step: tensor-parallel gradient
 * completion, data-parallel reduction (or reduce-scatter under the distributed optimizer), loss
 * scaling, clipping and the optimizer, by the same engine ({@code org.djlmegatron.training.DistributedStep})
 * as {@code pretrain-gpt}, so the trajectory is the same.
 *
 * <p>The configuration needs a {@link ModelLoss} and a {@link MegatronOptimizer}; the model's
 * block must be a {@link TrainableModel} (e.g. {@code GPTModel}). Every rank builds its own
 * trainer with the same listeners and runs {@code EasyTrain.fit} in lockstep. After each step
 * DJL's {@link Metrics} (a new one unless a listener set them) get {@code megatron_loss} (the global batch's
 * mean loss over data parallelism), {@code grad_norm}, {@code learning_rate} and
 * {@code loss_scale}; DJL's loss evaluator sees this rank's micro-batch losses.
 */
public class ParallelTrainer extends Trainer {

    private final RankContext ctx;
    private final ModelLoss loss;
    private final MegatronOptimizer optimizer;
    private final int globalBatchSize;
    private final org.djlmegatron.training.DistributedStep engine;
    private final Device[] microBatchDevices;
    private final ParameterStore store;
    private final List<StepResult> results = new ArrayList<>();
    private int micro;
    private long stepStart;
    private double scale;
    private long tokens;
    private NDManager stepLosses;
    private NDList losses;

    /**
     * A trainer for rank {@code ctx} of {@code model} (whose block is a {@link TrainableModel}).
     *
     * @param microBatchSize sequences per micro-batch ({@code --micro-batch-size})
     * @param globalBatchSize sequences per step over all data-parallel ranks ({@code --global-batch-size})
     */
    public ParallelTrainer(RankContext ctx, Model model, TrainingConfig config, int microBatchSize,
            int globalBatchSize) {
        super(model, config); // fires onTrainingBegin; getDevices() falls back to the config's until set below
        this.ctx = ctx;
        if (!(model.getBlock() instanceof TrainableModel trainable)) {
            throw new IllegalArgumentException("ParallelTrainer needs a block that is a TrainableModel (e.g. GPTModel), "
                    + "found " + (model.getBlock() == null ? "none" : model.getBlock().getClass().getName()));
        }
        if (!(config.getLossFunction() instanceof ModelLoss l)) {
            throw new IllegalArgumentException("ParallelTrainer needs a ModelLoss (the model's own loss over its "
                    + "logits shard), found " + config.getLossFunction().getClass().getName());
        }
        if (!(config.getOptimizer() instanceof MegatronOptimizer o)) {
            throw new IllegalArgumentException("ParallelTrainer needs a MegatronOptimizer (distributed step over flat "
                    + "masters), found " + (config.getOptimizer() == null ? "none"
                            : config.getOptimizer().getClass().getName()));
        }
        loss = l;
        optimizer = o;
        this.globalBatchSize = globalBatchSize;
        engine = new org.djlmegatron.training.DistributedStep(ctx, trainable, o.trainerConfig(microBatchSize, globalBatchSize));
        microBatchDevices = new Device[engine.microBatchesPerStep()];
        Arrays.fill(microBatchDevices, ctx.manager().getDevice());
        store = new ParameterStore(getManager(), false);
        if (getMetrics() == null) {
            setMetrics(new Metrics()); // DJL's logging listener prints the epoch's evaluators from them
        }
    }

    /** The rank's device once per micro-batch of a step: DJL's batch split is the micro-batch split. */
    @Override
    public Device[] getDevices() {
        return microBatchDevices == null ? super.getDevices() : microBatchDevices.clone();
    }

    @Override
    public GradientCollector newGradientCollector() {
        return new TapeCollector();
    }

    /** A training forward pass of the step's next micro-batch: this rank's logits. */
    @Override
    public NDList forward(NDList data, NDList labels) {
        long begin = System.nanoTime();
        if (micro == 0) {
            stepStart = begin;
            scale = engine.beginExternalStep();
            stepLosses = ctx.manager().newSubManager();
            losses = new NDList(microBatchDevices.length);
            loss.newStep();
        }
        if (micro >= microBatchDevices.length) {
            throw new IllegalStateException("rank " + ctx.rank() + ": micro-batch " + (micro + 1) + " of a step of "
                    + microBatchDevices.length + "; call step() after each batch");
        }
        ctx.tape().setKey(engine.microBatchKey(micro));
        NDList out = getModel().getBlock().forward(store, data, true);
        loss.expectTraining(out.head());
        tokens += data.head().size();
        addMetric("forward", begin);
        return out;
    }

    /** A validation forward pass (grad mode off): this rank's logits. */
    @Override
    public NDList evaluate(NDList data) {
        boolean gradMode = JniUtils.isGradMode();
        JniUtils.setGradMode(false);
        try {
            return getModel().getBlock().forward(store, data, false);
        } finally {
            JniUtils.setGradMode(gradMode);
        }
    }

    /** Megatron's distributed step over the micro-batches back-propagated since the last one. */
    @Override
    public void step() {
        if (micro != microBatchDevices.length) {
            throw new IllegalStateException("rank " + ctx.rank() + ": step() after " + micro + " of "
                    + microBatchDevices.length + " micro-batches (a batch must hold micro-batch size x "
                    + microBatchDevices.length + " rows)");
        }
        long begin = System.nanoTime();
        double lossSum = 0;
        for (NDArray l : losses) {
            lossSum += l.getFloat(); // in micro-batch order, read after the last backward, as the engine does
        }
        StepResult r;
        try {
            r = engine.completeExternalStep(stepStart, scale, lossSum, tokens);
        } finally {
            stepLosses.close();
            micro = 0;
            tokens = 0;
        }
        results.add(r);
        Metrics metrics = getMetrics();
        if (metrics != null) {
            metrics.addMetric("megatron_loss", r.loss());
            metrics.addMetric("grad_norm", r.gradNorm());
            metrics.addMetric("learning_rate", r.lr());
            metrics.addMetric("loss_scale", r.lossScale());
        }
        addMetric("step", begin);
    }

    /** Every step's result so far (loss averaged over data parallelism, identical on every rank). */
    public List<StepResult> results() {
        return Collections.unmodifiableList(results);
    }

    /** The rank this trainer runs on. */
    public RankContext rankContext() {
        return ctx;
    }

    /** The distributed step's engine (masters, optimizer state, counters: what checkpoints hold). */
    public org.djlmegatron.training.DistributedStep engine() {
        return engine;
    }

    public int globalBatchSize() {
        return globalBatchSize;
    }

    public MegatronOptimizer megatronOptimizer() {
        return optimizer;
    }

    @Override
    public void close() {
        try {
            super.close(); // onTrainingEnd first: a checkpoint listener still needs the engine
        } finally {
            engine.close();
        }
    }

    /** The rank's tape as DJL's gradient collector. */
    private final class TapeCollector implements GradientCollector {

        @Override
        public void backward(NDArray target) {
            NDArray value = target.stopGradient();
            value.attach(stepLosses);
            losses.add(value);
            try {
                ctx.tape().backward(target, Scalar.of(stepLosses, scale / microBatchDevices.length));
            } finally {
                ctx.tape().setKey(null);
                micro++;
            }
        }

        /** Gradients are zeroed by the step's first forward pass ({@link #forward(NDList, NDList)}). */
        @Override
        public void zeroGradients() {
            throw new UnsupportedOperationException("ParallelTrainer zeroes gradients at each step's first micro-batch");
        }

        @Override
        public void close() {}
    }
}
