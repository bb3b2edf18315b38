package org.djlmegatron.training;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.Shape;
import java.util.List;
import org.djlmegatron.autograd.RandomKey;
import org.djlmegatron.autograd.Scalar;
import org.djlmegatron.autograd.Tape;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.engine.HeldMemory;
import org.djlmegatron.optim.Optimizer;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;

/**
 * Megatron's training step on one rank: micro-batches with gradient accumulation, tensor-parallel
 * gradient completion, data-parallel reduction (bucketed all-reduce, or reduce-scatter under the
 * distributed optimizer), inf/NaN check, global norm and clipping, the optimizer on fp32 masters
 * (this rank's DP shard of them under the distributed optimizer), and the write-back of updated
 * weights (all-gathered over DP when sharded). Every rank of the grid runs it in lockstep.
 */
public final class Trainer implements AutoCloseable {

    private final RankContext ctx;
    private final TrainableModel model;
    private final TrainerConfig config;
    private final ProcessGroup dp;
    private final ProcessGroup tp;
    private final FlatLayout layout;
    private final int microBatches;
    private final NDManager state;
    private final Optimizer optimizer;
    private final LossScaler scaler;
    private final ProcessGroup data;
    private final long shardStart;
    private final long shardLength;
    private NDArray masters;
    private NDArray decayMask;
    private NDArray normMask;
    private long iteration;
    private long updates;
    private boolean measureHeld;
    private long heldBytes = -1;

    public Trainer(RankContext ctx, TrainableModel model, TrainerConfig config) {
        this.ctx = ctx;
        this.model = model;
        this.config = config;
        dp = ctx.group(GroupKind.DATA_CONTEXT);
        data = ctx.group(GroupKind.DATA); // context-parallel peers read the same samples
        tp = ctx.tensorGroup();
        microBatches = config.microBatchesPerStep(data.size());
        layout = new FlatLayout(model.trainableParameters(), dp.size());
        state = ctx.manager().newSubManager();
        optimizer = config.optimizer().get();
        scaler = config.scaler().get();
        long full = layout.paddedSize();
        shardLength = config.distributedOptimizer() ? full / dp.size() : full;
        shardStart = config.distributedOptimizer() ? shardLength * dp.rank() : 0;
        boolean firstTpRank = tp.rank() == 0;
        try (NDArray values = layout.values(state);
                NDArray decay = layout.mask(state, TrainableParameter::weightDecay);
                NDArray counted = layout.mask(state, p -> !p.tpDuplicate() || firstTpRank)) {
            masters = shard(values);
            decayMask = shard(decay);
            normMask = shard(counted);
        }
    }

    /** Micro-batches this rank runs per step. */
    public int microBatchesPerStep() {
        return microBatches;
    }

    /** Iterations completed. */
    public long iteration() {
        return iteration;
    }

    /** Runs one step on this rank's {@link #microBatchesPerStep()} micro-batches. */
    public StepResult step(List<MicroBatch> batches) {
        if (batches.size() != microBatches) {
            throw new IllegalArgumentException("rank " + ctx.rank() + " got " + batches.size()
                    + " micro-batches, expected " + microBatches);
        }
        long t0 = System.nanoTime();
        layout.zeroGradients();
        double scale = scaler.scale();
        float[] losses = new float[batches.size()];
        long tokens = 0;
        try (NDManager stepLosses = ctx.manager().newSubManager()) {
            NDList pending = new NDList(batches.size()); // read once after the last backward: no device sync between
            for (int m = 0; m < batches.size(); m++) {
                MicroBatch mb = batches.get(m);
                Tape tape = ctx.tape();
                tape.setKey(new RandomKey(iteration, firstSample(m)));
                try (NDManager step = ctx.manager().newSubManager()) {
                    NDArray inputs = step.create(mb.inputs(), new Shape(mb.rows(), mb.seq()));
                    NDArray labels = step.create(mb.labels(), new Shape(mb.rows(), mb.seq()));
                    NDArray loss = model.loss(inputs, labels);
                    if (measureHeld) {
                        heldBytes = HeldMemory.bytes(step);
                        measureHeld = false;
                    }
                    NDArray value = loss.stopGradient();
                    value.attach(stepLosses);
                    pending.add(value);
                    tape.backward(loss, Scalar.of(step, scale / microBatches));
                    tokens += mb.tokens();
                } finally {
                    tape.setKey(null);
                }
            }
            for (int i = 0; i < losses.length; i++) {
                losses[i] = pending.get(i).getFloat();
            }
        }
        double lossSum = 0;
        for (float l : losses) {
            lossSum += l; // in micro-batch order, as before: the same double sum
        }
        model.reduceTensorParallelGradients();
        double loss = averageOverDp(lossSum / microBatches);
        Update u = update(scale);
        scaler.update(u.skipped);
        iteration++;
        long globalTokens = tokens * data.size();
        return new StepResult(iteration, loss, u.gradNorm, u.lr, scale, u.skipped, globalTokens,
                (System.nanoTime() - t0) / 1e9);
    }

    /**
     * Global index of micro-batch {@code m}'s first sample in this iteration's global batch: the
     * batch sources split the global batch over DP ranks in order, then into micro-batches.
     */
    private long firstSample(int m) {
        return iteration * config.globalBatchSize() + (long) data.rank() * (config.globalBatchSize() / data.size())
                + (long) m * config.microBatchSize();
    }

    /** Measures, in the next step's first micro-batch, the bytes its forward keeps for backward. */
    public void measureHeldBytes() {
        measureHeld = true;
    }

    /** Bytes the last measured forward kept for backward on this rank ({@link HeldMemory}); -1 before. */
    public long heldBytes() {
        return heldBytes;
    }

    private record Update(double gradNorm, double lr, boolean skipped) {}

    private Update update(double scale) {
        try (NDManager s = state.newSubManager()) {
            NDArray grads = reduceOverDp(layout.gradients(s));
            if (scale != 1.0) {
                grads.muli((float) (1.0 / scale));
            }
            if (anyNonFinite(grads)) {
                return new Update(Double.NaN, 0, true);
            }
            double norm = Math.sqrt(sumOverModel(grads.square().mul(normMask).sum().getFloat()));
            if (config.clipGrad() > 0) {
                double coeff = config.clipGrad() / (norm + 1e-6);
                if (coeff < 1.0) {
                    grads.muli((float) coeff);
                }
            }
            double lr = config.schedule().lr(updates);
            updates++;
            optimizer.step(masters, grads, decayMask, lr, updates);
            writeBackMasters();
            return new Update(norm, lr, false);
        }
    }

    /** Gradients averaged over data parallelism: this rank's shard of them, or all of them. */
    private NDArray reduceOverDp(NDArray grads) {
        if (dp.size() == 1) {
            return grads;
        }
        NDArray reduced;
        if (config.distributedOptimizer()) {
            reduced = dp.reduceScatter(grads, 0, ReduceOp.SUM);
        } else {
            NDList buckets = new NDList();
            long n = grads.getShape().get(0);
            for (long start = 0; start < n; start += config.bucketElements()) {
                long end = Math.min(n, start + config.bucketElements());
                try (NDArray bucket = grads.get(new NDIndex("{}:{}", start, end))) {
                    buckets.add(dp.allReduce(bucket, ReduceOp.SUM));
                }
            }
            reduced = buckets.size() == 1 ? buckets.get(0) : NDArrays.concat(buckets);
        }
        return reduced.divi(dp.size());
    }

    /** Whether any rank's gradients hold an inf or NaN (all ranks agree on the answer). */
    private boolean anyNonFinite(NDArray grads) {
        if (!scaler.isDynamic() && !Double.isFinite(scaler.scale())) {
            return true;
        }
        boolean bad;
        try (NDArray inf = grads.isInfinite().any(); NDArray nan = grads.isNaN().any()) {
            bad = inf.getBoolean() || nan.getBoolean();
        }
        return maxOverWorld(bad ? 1f : 0f) > 0;
    }

    private double maxOverWorld(float v) {
        try (NDManager s = state.newSubManager()) {
            NDArray x = s.create(new float[] {v});
            NDArray m = tp.allReduce(x, ReduceOp.MAX);
            if (dp.size() > 1) {
                m = dp.allReduce(m, ReduceOp.MAX);
            }
            return m.getFloat(0);
        }
    }

    /** Sum of squares over the model-parallel group (and the DP shards when sharded). */
    private double sumOverModel(float local) {
        try (NDManager s = state.newSubManager()) {
            NDArray x = s.create(new float[] {local});
            NDArray sum = tp.allReduce(x, ReduceOp.SUM);
            if (config.distributedOptimizer() && dp.size() > 1) {
                sum = dp.allReduce(sum, ReduceOp.SUM);
            }
            return sum.getFloat(0);
        }
    }

    private double averageOverDp(double v) {
        if (dp.size() == 1) {
            return v;
        }
        try (NDManager s = state.newSubManager()) {
            return dp.allReduce(s.create(new float[] {(float) v}), ReduceOp.AVG).getFloat(0);
        }
    }

    /** Copies the fp32 masters (all-gathered over DP when sharded) into the model's weights. Collective. */
    public void writeBackMasters() {
        NDArray full = config.distributedOptimizer() && dp.size() > 1 ? dp.allGather(masters, 0) : masters;
        layout.writeBack(full);
        if (full != masters) {
            full.close();
        }
    }

    private NDArray shard(NDArray full) {
        NDArray piece = full.get(new NDIndex("{}:{}", shardStart, shardStart + shardLength)).duplicate();
        piece.attach(state);
        return piece;
    }

    /** Bytes of fp32 masters plus optimizer state held by this rank. */
    public long optimizerBytes() {
        return shardLength * 4 + optimizer.stateBytes();
    }

    public Optimizer optimizer() {
        return optimizer;
    }

    public LossScaler scaler() {
        return scaler;
    }

    /** This rank's fp32 masters (its DP shard under the distributed optimizer). */
    public NDArray masters() {
        return masters;
    }

    public FlatLayout layout() {
        return layout;
    }

    /** Updates taken (the schedule's position; skipped steps do not count). */
    public long updates() {
        return updates;
    }

    /** Restores the counters of a checkpoint. */
    public void restoreCounters(long iteration, long updates) {
        this.iteration = iteration;
        this.updates = updates;
    }

    @Override
    public void close() {
        state.close();
    }

}
