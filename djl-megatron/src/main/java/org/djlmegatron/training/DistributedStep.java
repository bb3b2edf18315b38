package org.djlmegatron.training;

import org.djlmegatron.training.model.TrainableModel;
import org.djlmegatron.training.model.MicroBatch;
import org.djlmegatron.training.model.PipelineStageModel;
import org.djlmegatron.training.model.TrainableParameter;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.Shape;
import java.util.List;
import org.djlmegatron.autograd.RandomKey;
import org.djlmegatron.autograd.Scalar;
import org.djlmegatron.autograd.Tape;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.engine.Cast;
import org.djlmegatron.engine.HeldMemory;
import org.djlmegatron.engine.TorchNative;
import org.djlmegatron.optim.FlatOptimizer;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.pipeline.PipelineReplay;
import org.djlmegatron.pipeline.PipelineRunner;
import org.djlmegatron.pipeline.PipelineSchedule;
import org.djlmegatron.training.buffers.ExpertBuffers;
import org.djlmegatron.training.buffers.GradientShard;
import org.djlmegatron.training.buffers.Overlap;
import org.djlmegatron.training.buffers.OverlappedCommunication;
import org.djlmegatron.training.buffers.ParamAndGradBuffer;
import org.djlmegatron.training.buffers.ParameterShards;
import org.djlmegatron.training.buffers.RankMemory;
import org.djlmegatron.training.buffers.ShardingStrategy;

/**
 * Megatron's training step on one rank: micro-batches with gradient accumulation, tensor-parallel
 * gradient completion, data-parallel reduction (bucketed all-reduce, or reduce-scatter under the
 * distributed optimizer), inf/NaN check, global norm and clipping, the optimizer on fp32 masters
 * (this rank's DP shard of them under the distributed optimizer), and the write-back of updated
 * weights (all-gathered over DP when sharded). Under ZeRO-2 ({@link GradientShard}) each
 * micro-batch's gradients are reduce-scattered as soon as its backward ends (with
 * {@code --overlap-grad-reduce}, reduced bucket by bucket to their owners during it); under ZeRO-3
 * ({@link ParameterShards}) the weights too stay sharded, gathered per layer by tape hooks, and
 * nothing is written back after the update. Every rank of the grid runs it in lockstep.
 */
public final class DistributedStep implements AutoCloseable {

    private final RankContext ctx;
    private final TrainableModel model;
    private final StepConfig config;
    private final ProcessGroup dp;
    private final ProcessGroup tp;
    /** The pipeline group; stages run the 1F1B schedule when it has more than one member. */
    private final ProcessGroup pp;
    private final FlatLayout layout;
    /**
     * Under expert parallelism, the expert parameters (summed over the expert-data-parallel group,
     * sharded over it by the distributed optimizer), kept after the dense part in the masters;
     * null otherwise (everything is in {@link #layout}).
     */
    private final FlatLayout expertLayout;
    private final ProcessGroup ep;
    private final ProcessGroup expertDp;
    private final long expertShardStart;
    private final long expertShardLength;
    private final int microBatches;
    private final NDManager state;
    private final FlatOptimizer optimizer;
    private final LossScaler scaler;
    private final ProcessGroup data;
    private final long shardStart;
    private final long shardLength;
    /**
     * The parameters and their gradients in contiguous buffers (native library, no expert
     * parallelism; under pipelining one buffer over all of this rank's model chunks); null: expert
     * parallelism ({@link #expertBuffers}) or the flat-vector path of {@link #layout}.
     */
    private final ParamAndGradBuffer buffer;
    /**
     * Under expert parallelism, the dense and the expert parameters in one buffer each (native
     * library); null: no expert parallelism, or the flat-vector path of {@link #layout} and
     * {@link #expertLayout}.
     */
    private final ExpertBuffers expertBuffers;
    /** ZeRO-2: this rank's fp32 main-gradient shard, filled per micro-batch; null otherwise. */
    private final GradientShard gradShard;
    /**
     * ZeRO-3: this rank's 1/DP shard of the weights, gathered per layer around its forward and
     * backward, and its fp32 gradient shard; null otherwise ({@link #buffer} is null then).
     */
    private final ParameterShards paramShards;
    /** {@code --overlap-grad-reduce} / {@code --overlap-param-gather} over {@link #buffer}; null: none. */
    private final OverlappedCommunication overlapped;
    private NDArray masters;
    /**
     * Under expert parallelism with fp32 weights, which are their own masters: this rank's dense
     * and expert weight shards (views of the two buffers), one optimizer range; {@link #masters}
     * is then null. Null otherwise.
     */
    private List<NDArray> weightMasters;
    private NDArray decayMask;
    private NDArray normMask;
    private long iteration;
    private long updates;
    private boolean measureHeld;
    /** Under pipelining: seconds this rank spent in its passes, and in the whole schedule (passes + waits). */
    private double pipelineComputeSeconds;
    private double pipelineScheduleSeconds;
    /** The same steps replayed on one device per stage from the measured pass times ({@link PipelineReplay}). */
    private double replayedComputeSeconds;
    private double replayedScheduleSeconds;
    private long heldBytes = -1;
    private int microbatchGroupSize; // 0: Megatron's default, the pipeline size

    public DistributedStep(RankContext ctx, TrainableModel model, StepConfig config) {
        this(ctx, model, config, Overlap.OFF);
    }

    /** A step whose data-parallel reduction and parameter gather run as {@code overlap} says. */
    public DistributedStep(RankContext ctx, TrainableModel model, StepConfig config, Overlap overlap) {
        this.ctx = ctx;
        this.model = model;
        this.config = config;
        dp = ctx.group(GroupKind.DATA_CONTEXT);
        data = ctx.group(GroupKind.DATA); // context-parallel peers read the same samples
        tp = ctx.tensorGroup();
        pp = ctx.group(GroupKind.PIPELINE);
        if (pp.size() > 1 && !(model instanceof PipelineStageModel)) {
            throw new IllegalArgumentException("pipeline size " + pp.size() + " needs a PipelineStageModel, got "
                    + model.getClass().getSimpleName());
        }
        microBatches = config.microBatchesPerStep(data.size());
        ep = ctx.group(GroupKind.EXPERT);
        expertDp = ctx.group(GroupKind.EXPERT_DATA);
        List<TrainableParameter> params = model.trainableParameters();
        boolean split = ep.size() > 1;
        layout = new FlatLayout(split ? params.stream().filter(p -> !p.expert()).toList() : params, dp.size());
        expertLayout = split ? new FlatLayout(params.stream().filter(TrainableParameter::expert).toList(),
                expertDp.size()) : null;
        state = ctx.manager().newSubManager();
        ShardingStrategy sharding = config.sharding();
        boolean buffersOn = Boolean.parseBoolean(System.getProperty("djlm.gradBuffers", "true"));
        boolean buffers = !split && buffersOn && ParamAndGradBuffer.supports(params);
        boolean expertBuffersOn = split && buffersOn && ExpertBuffers.supports(params);
        checkStrategyRuns(sharding, buffers || expertBuffersOn);
        // with overlap every ZeRO-3 collective runs on the communication thread, on communicators of its own
        paramShards = sharding.shardsParameters() ? new ParameterShards(params,
                overlap.any() ? ctx.overlapGroup(GroupKind.DATA_CONTEXT) : dp,
                !split ? null : overlap.any() ? ctx.overlapGroup(GroupKind.EXPERT_DATA) : expertDp,
                ctx.tape(), state, overlap) : null;
        buffer = buffers && paramShards == null
                ? new ParamAndGradBuffer(params, dp.size(), config.bucketElements(), state, !sharding.shardsGradients())
                : null;
        expertBuffers = expertBuffersOn && paramShards == null
                ? new ExpertBuffers(params, dp, expertDp, config.bucketElements(), config.distributedOptimizer(),
                        sharding.shardsGradients(), state)
                : null;
        gradShard = sharding.shardsGradients() && buffer != null ? new GradientShard(buffer, dp, state) : null;
        optimizer = config.optimizer().get();
        scaler = config.scaler().get();
        long full = layout.paddedSize();
        shardLength = paramShards != null ? paramShards.shardSize() : config.distributedOptimizer() ? full / dp.size() : full;
        shardStart = config.distributedOptimizer() && paramShards == null ? shardLength * dp.rank() : 0;
        boolean firstTpRank = tp.rank() == 0;
        boolean tiedAcrossStages = pp.size() > 1 && !((PipelineStageModel) model).embeddingGroupParameters().isEmpty();
        overlapped = paramShards != null ? null // ZeRO-3 overlaps its own units' collectives (ParameterShards)
                : split ? OverlappedCommunication.createForExperts(ctx, expertBuffers, dp, config.distributedOptimizer(),
                        tiedAcrossStages, config.bucketElements(), overlap)
                : OverlappedCommunication.create(ctx, buffer, dp, gradShard, config.distributedOptimizer(),
                        tiedAcrossStages, config.bucketElements(), overlap);
        if (paramShards != null) {
            initFromShards(firstTpRank);
            expertShardStart = 0;
            expertShardLength = 0;
            return;
        }
        if (buffer != null) {
            initFromBuffer(firstTpRank);
            expertShardStart = 0;
            expertShardLength = 0;
            return;
        }
        if (expertBuffers != null) {
            expertShardStart = 0; // the buffers keep their own shard offsets
            expertShardLength = expertBuffers.expertShardLength();
            initFromExpertBuffers(firstTpRank);
            return;
        }
        try (NDArray values = layout.values(state);
                NDArray decay = layout.mask(state, TrainableParameter::weightDecay);
                NDArray counted = layout.mask(state, p -> countedInNorm(p, firstTpRank))) {
            masters = shard(values);
            decayMask = shard(decay);
            normMask = shard(counted);
        }
        if (expertLayout == null) {
            expertShardStart = 0;
            expertShardLength = 0;
            return;
        }
        long experts = expertLayout.paddedSize();
        expertShardLength = config.distributedOptimizer() ? experts / expertDp.size() : experts;
        expertShardStart = config.distributedOptimizer() ? expertShardLength * expertDp.rank() : 0;
        try (NDArray values = expertLayout.values(state);
                NDArray decay = expertLayout.mask(state, TrainableParameter::weightDecay);
                NDArray counted = expertLayout.mask(state, p -> !p.tpDuplicate() || firstTpRank)) {
            masters = appendExpertShard(masters, values);
            decayMask = appendExpertShard(decayMask, decay);
            normMask = appendExpertShard(normMask, counted);
        }
    }

    /**
     * Masters and masks over the buffer: fp32 weights are their own masters (this rank's shard of
     * the buffer under the distributed optimizer, a view); 16-bit weights get an fp32 copy.
     */
    private void initFromBuffer(boolean firstTpRank) {
        NDArray weights = buffer.params();
        if (buffer.weightsAreFp32()) {
            // a view (basic slicing): the optimizer updates this rank's shard of the weights in place
            masters = config.distributedOptimizer() && dp.size() > 1
                    ? weights.get(new NDIndex("{}:{}", shardStart, shardStart + shardLength)) : weights;
        } else {
            try (NDArray wide = weights.toType(ai.djl.ndarray.types.DataType.FLOAT32, true)) {
                masters = shard(wide);
            }
        }
        try (NDArray decay = buffer.mask(state, TrainableParameter::weightDecay);
                NDArray counted = buffer.mask(state, p -> countedInNorm(p, firstTpRank))) {
            decayMask = shard(decay);
            normMask = shard(counted);
        }
    }

    /** Whether the gradient norm counts {@code p} here: one TP rank's copy of a duplicate, one stage's of a tied embedding. */
    private boolean countedInNorm(TrainableParameter p, boolean firstTpRank) {
        return (!p.tpDuplicate() || firstTpRank) && (!(model instanceof PipelineStageModel stage) || stage.countedInNorm(p));
    }

    /** Masters and masks over the two buffers of expert parallelism, in the flat path's order (dense shard, expert shard). */
    private void initFromExpertBuffers(boolean firstTpRank) {
        if (expertBuffers.weightsAreFp32()) {
            weightMasters = expertBuffers.weightShards(state); // updated in place: no copy, nothing written back
        } else {
            masters = expertBuffers.masters(state);
        }
        decayMask = expertBuffers.mask(state, TrainableParameter::weightDecay, TrainableParameter::weightDecay);
        normMask = expertBuffers.mask(state, p -> countedInNorm(p, firstTpRank), p -> !p.tpDuplicate() || firstTpRank);
    }

    /**
     * ZeRO-3: masters over this rank's unit shards (the shards themselves for fp32 weights; under
     * expert parallelism the dense units' shards, then the expert units'), masks in that order.
     */
    private void initFromShards(boolean firstTpRank) {
        NDArray weights = paramShards.shards();
        if (weights.getDataType() == ai.djl.ndarray.types.DataType.FLOAT32) {
            masters = weights;
        } else {
            masters = weights.toType(ai.djl.ndarray.types.DataType.FLOAT32, true);
            masters.attach(state);
        }
        decayMask = paramShards.mask(state, TrainableParameter::weightDecay);
        normMask = paramShards.mask(state, p -> countedInNorm(p, firstTpRank));
    }

    /** Refuses a ZeRO stage this step cannot run here, saying why (before any collective). */
    private void checkStrategyRuns(ShardingStrategy sharding, boolean buffers) {
        String flag = "--data-parallel-sharding-strategy " + sharding.flagValue();
        if (sharding.shardsParameters() && pp.size() > 1) {
            state.close();
            throw new IllegalArgumentException(flag + " (ZeRO-3) needs --pipeline-model-parallel-size 1, found "
                    + pp.size() + ": Megatron-FSDP, whose strategy this is, does not run under pipeline parallelism "
                    + "either; use optim_grads (ZeRO-2)");
        }
        if (sharding.shardsGradients() && !buffers) {
            state.close();
            throw new IllegalArgumentException(flag + " needs the contiguous gradient buffers: the project's native "
                    + "library (docs/native.md), one weight dtype and -Ddjlm.gradBuffers not false; found "
                    + (TorchNative.isAvailable() ? "buffers off" : "the stock engine"));
        }
    }

    /** {@code dense} followed by this rank's shard of the expert vector {@code full}. */
    private NDArray appendExpertShard(NDArray dense, NDArray full) {
        try (NDArray piece = full.get(new NDIndex("{}:{}", expertShardStart, expertShardStart + expertShardLength))) {
            NDArray joined = NDArrays.concat(new NDList(dense, piece));
            joined.attach(state);
            dense.close();
            return joined;
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
        if (paramShards != null) {
            paramShards.releaseAll(); // an evaluation may have left units gathered
            paramShards.zeroGradients();
        } else if (gradShard != null) {
            gradShard.zero();
        } else {
            zeroGradients();
        }
        double scale = scaler.scale();
        // ZeRO-2, and 16-bit weights: each micro-batch's gradients added into the fp32 main gradient (completed over
        // TP first, except for 16-bit weights over the dense buffer: tensorParallelOnMain)
        boolean perMicroBatch = gradShard != null || paramShards != null || buffer != null && !buffer.weightsAreFp32()
                || expertBuffers != null && (!expertBuffers.weightsAreFp32() || expertBuffers.shardsGradients());
        if (pp.size() > 1) {
            return finishStep(t0, scale, pipelineLossSum(batches, scale, perMicroBatch), tokens(batches), perMicroBatch);
        }
        float[] losses = new float[batches.size()];
        long tokens = 0;
        try (NDManager stepLosses = ctx.manager().newSubManager()) {
            NDList pending = new NDList(batches.size()); // read once after the last backward: no device sync between
            for (int m = 0; m < batches.size(); m++) {
                MicroBatch mb = batches.get(m);
                Tape tape = ctx.tape();
                tape.setKey(new RandomKey(iteration, firstSample(m)));
                try (NDManager step = ctx.manager().newSubManager()) {
                    beginMicroBatchGradients();
                    NDArray inputs = step.create(mb.inputs(), new Shape(mb.rows(), mb.seq()));
                    NDArray labels = step.create(mb.labels(), new Shape(mb.rows(), mb.seq()));
                    NDArray loss = model.loss(inputs, labels);
                    if (overlapped != null) {
                        overlapped.afterForward(m, batches.size());
                    }
                    if (measureHeld) {
                        heldBytes = HeldMemory.bytes(step);
                        measureHeld = false;
                    }
                    NDArray value = loss.stopGradient();
                    value.attach(stepLosses);
                    pending.add(value);
                    tape.backward(loss, Scalar.of(step, scale / microBatches));
                    if (perMicroBatch) {
                        if (shardsGradients() && overlapped != null) {
                            overlapped.finishMicroBatch(); // ZeRO-2 overlapped: DP (to the owners), then TP
                        }
                        // ZeRO-3 completes over TP on its shard, 16-bit weights on the main gradient: after DP
                        if (paramShards == null && !tensorParallelOnMain() && !tensorParallelOnShard()) {
                            model.reduceTensorParallelGradients();
                        }
                        if (paramShards != null) { // ZeRO-3: free the layers, reduce-scatter per layer
                            paramShards.endMicroBatch();
                        } else if (shardsGradients() && overlapped != null) {
                            endOverlappedMicroBatch(); // this rank's reduced slices into its shards
                        } else if (gradShard != null) { // ZeRO-2: reduce-scatter and drop this micro-batch's gradients
                            gradShard.endMicroBatch();
                        } else if (overlapped == null || m < batches.size() - 1) {
                            accumulateIntoMain(); // the last one's buckets: by the overlapped reduction (BucketReducer)
                        }
                    }
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
        return finishStep(t0, scale, lossSum, tokens, perMicroBatch);
    }

    /** Zeroes the gradients (and main gradients) the step accumulates into. */
    private void zeroGradients() {
        if (buffer != null) {
            buffer.zeroGradients();
        } else if (expertBuffers != null) {
            expertBuffers.zeroGradients();
        } else {
            layout.zeroGradients();
            if (expertLayout != null) {
                expertLayout.zeroGradients();
            }
        }
    }

    /** ZeRO-2 and 3: binds the gradients to a workspace for the next backward; nothing otherwise. */
    private void beginMicroBatchGradients() {
        if (gradShard != null) {
            gradShard.beginMicroBatch();
        } else if (paramShards != null) {
            paramShards.beginMicroBatch();
        } else if (expertBuffers != null) {
            expertBuffers.beginMicroBatch();
        }
    }

    /** Whether only gradient shards are kept between micro-batches (ZeRO-2; under expert parallelism too). */
    private boolean shardsGradients() {
        return gradShard != null || expertBuffers != null && expertBuffers.shardsGradients();
    }

    /** ZeRO-2 after an overlapped micro-batch: this rank's reduced slices into its gradient shards. */
    private void endOverlappedMicroBatch() {
        if (gradShard != null) {
            gradShard.endOverlappedMicroBatch();
        } else {
            expertBuffers.endOverlappedMicroBatch();
        }
    }

    /**
     * 16-bit weights over the buffers: the last backward's gradients, added into the fp32 main
     * gradients (under expert parallelism with ZeRO-2: reduce-scattered into the shards).
     */
    private void accumulateIntoMain() {
        if (buffer != null) {
            buffer.accumulateIntoMain();
        } else {
            expertBuffers.accumulateIntoMain();
        }
    }

    /**
     * Whether the tensor-parallel completion runs once per step on the fp32 main gradient, after
     * the data-parallel reduction (Megatron's order for 16-bit weights: micro-batch gradients go
     * into {@code main_grad}, {@code finish_grad_sync}, then {@code _allreduce_layernorm_grads} on
     * {@code main_grad}; the TP sum in fp32): 16-bit weights over the buffers (both buffers under
     * expert parallelism), not ZeRO-2 ({@link #tensorParallelOnShard}). Needs the model's
     * {@link TrainableParameter#tpPartialGradient()} flags. fp32 weights keep their order
     * (completion on the gradients, then the reduction, except under overlap).
     */
    private boolean tensorParallelOnMain() {
        return sixteenBitBuffers() && !shardsGradients();
    }

    /**
     * ZeRO-2 with 16-bit weights: partial gradients are completed over TP once per step on the fp32
     * gradient shards, after the data-parallel reductions ({@link GradientShard#completeTensorParallel}).
     */
    private boolean tensorParallelOnShard() {
        return sixteenBitBuffers() && shardsGradients();
    }

    private boolean sixteenBitBuffers() {
        return buffer != null && !buffer.weightsAreFp32() || expertBuffers != null && !expertBuffers.weightsAreFp32();
    }

    private static long tokens(List<MicroBatch> batches) {
        long tokens = 0;
        for (MicroBatch mb : batches) {
            tokens += mb.tokens();
        }
        return tokens;
    }

    /**
     * After every backward: gradient completion, the update, the counters.
     *
     * @param inMain whether each micro-batch's gradients were already moved into the main gradient
     *     (ZeRO-2's shard, or the fp32 main gradient of 16-bit weights), completed over TP there
     *     already or, for {@link #tensorParallelOnMain}, in the update after the DP reduction
     */
    private StepResult finishStep(long t0, double scale, double lossSum, long tokens, boolean inMain) {
        if (overlapped != null) {
            overlapped.finishGradients(); // before the tensor-parallel completion: Megatron's order, DP then TP
        }
        if (!inMain) {
            model.reduceTensorParallelGradients();
        }
        if (pp.size() > 1) {
            reduceEmbeddingGroup(inMain);
        }
        double loss = averageOverDp(lossSum / microBatches);
        Update u = update(scale, inMain);
        scaler.update(u.skipped);
        iteration++;
        long globalTokens = tokens * data.size();
        return new StepResult(iteration, loss, u.gradNorm, u.lr, scale, u.skipped, globalTokens,
                (System.nanoTime() - t0) / 1e9);
    }

    /**
     * This stage's part of the step under the 1F1B schedule: one tape per micro-batch in flight,
     * activations and their gradients exchanged with the neighbouring stages by
     * {@link PipelineRunner}. Returns the sum of the micro-batch losses, computed on the last stage
     * and broadcast over the pipeline so every rank reports it.
     */
    private double pipelineLossSum(List<MicroBatch> batches, double scale, boolean intoMainPerBackward) {
        PipelineStageModel stage = (PipelineStageModel) model;
        int n = batches.size();
        int chunks = stage.chunks(); // interleaving: per model chunk, one tape per micro-batch in flight
        Tape[][] tapes = new Tape[chunks][n];
        NDArray[][] outputs = new NDArray[chunks][n];
        NDArray[][] inputGradients = new NDArray[chunks][n];
        // what each micro-batch's forward keeps for backward, freed once its backward is done
        NDManager[][] held = new NDManager[chunks][n];
        long[] peakHeld = {measureHeld ? 0 : -1};
        double[] passSeconds = new double[2 * n * chunks]; // this rank's passes, in schedule order
        int[] passes = {0};
        float[] losses = new float[n];
        boolean[] firstForwardDone = {false};
        MicroBatch shape = batches.get(0);
        try (NDManager step = ctx.manager().newSubManager()) {
            NDList pending = new NDList(n);
            PipelineRunner.StageWork work = new PipelineRunner.StageWork() {
                @Override
                public NDArray forward(int m, int chunk, NDArray input) {
                    long c0 = System.nanoTime();
                    try {
                        held[chunk][m] = step.newSubManager();
                        NDArray out = forwardPass(m, stage.chunk(chunk), tapes[chunk], outputs[chunk],
                                inputGradients[chunk], input, held[chunk][m]);
                        if (peakHeld[0] >= 0) {
                            peakHeld[0] = Math.max(peakHeld[0], heldInFlight(held));
                        }
                        return out;
                    } finally {
                        double t = (System.nanoTime() - c0) / 1e9;
                        pipelineComputeSeconds += t;
                        passSeconds[passes[0]++] = t;
                    }
                }

                private NDArray forwardPass(int m, PipelineStageModel part, Tape[] tapes, NDArray[] outputs,
                        NDArray[] inputGradients, NDArray input, NDManager mine) {
                    MicroBatch mb = batches.get(m);
                    tapes[m] = new Tape();
                    tapes[m].setKey(new RandomKey(iteration, firstSample(m)));
                    if (overlapped != null) {
                        overlapped.listenTo(tapes[m]); // this micro-batch's uses and backward progress
                    }
                    Tape previous = ctx.useTape(tapes[m]);
                    if (input != null) {
                        input.attach(mine); // so this stage's activations (made from it) are counted and freed with it
                    }
                    try {
                        NDArray ids = mine.create(mb.inputs(), new Shape(mb.rows(), mb.seq()));
                        NDArray labels = mine.create(mb.labels(), new Shape(mb.rows(), mb.seq()));
                        NDArray hidden = input == null ? null : tapes[m].function(new NDList(input),
                                in -> new NDList(in.get(0).duplicate()),
                                grads -> {
                                    inputGradients[m] = grads.get(0).duplicate(); // what backward sends back
                                    return grads;
                                }).get(0);
                        outputs[m] = part.forwardStage(ids, hidden, labels);
                        if (overlapped != null && !firstForwardDone[0]) {
                            firstForwardDone[0] = true;
                            overlapped.afterFirstForward();
                        }
                        if (!part.isLastStage()) { // in the exchanged dtype (dropout's fp32 masks promote)
                            outputs[m] = Cast.to(outputs[m], part.activationType());
                            return outputs[m];
                        }
                        NDArray loss = outputs[m].stopGradient();
                        loss.attach(step); // read after the last backward
                        pending.add(loss);
                        return null;
                    } finally {
                        ctx.useTape(previous);
                    }
                }

                @Override
                public NDArray backward(int m, int chunk, NDArray outputGradient) {
                    long c0 = System.nanoTime();
                    try {
                        beginMicroBatchGradients(); // ZeRO-2: this backward's gradients only, then reduce-scattered
                        if (overlapped != null && m == n - 1) { // the chunk's last backward: its buckets start as they finish
                            overlapped.armChunk(stage.chunk(chunk).trainableParameters());
                        }
                        NDArray inputGradient = backwardPass(m, stage.chunk(chunk).isLastStage(), tapes[chunk],
                                outputs[chunk], inputGradients[chunk], outputGradient);
                        if (intoMainPerBackward) { // ZeRO-2, 16-bit weights: micro-batches accumulate in fp32
                            // TP and DP peers of a stage run the same schedule: their collectives come in the same order
                            if (!tensorParallelOnMain() && !tensorParallelOnShard()) {
                                model.reduceTensorParallelGradients();
                            }
                            if (gradShard != null) {
                                gradShard.endMicroBatch();
                            } else if (overlapped == null) {
                                accumulateIntoMain();
                            } else if (m < n - 1) { // 16-bit weights with overlap: this chunk's range only, since
                                // buckets of chunks past their last backward may be in flight on the communication
                                // thread; in the chunk's last backward each bucket's task adds its own gradients
                                accumulateChunkIntoMain(stage.chunk(chunk).trainableParameters());
                            }
                        }
                        if (inputGradient != null) {
                            inputGradient.attach(step); // sent after this pass
                        }
                        held[chunk][m].close();
                        held[chunk][m] = null;
                        return inputGradient;
                    } finally {
                        double t = (System.nanoTime() - c0) / 1e9;
                        pipelineComputeSeconds += t;
                        passSeconds[passes[0]++] = t;
                    }
                }

                private NDArray backwardPass(int m, boolean lastStage, Tape[] tapes, NDArray[] outputs,
                        NDArray[] inputGradients, NDArray outputGradient) {
                    Tape previous = ctx.useTape(tapes[m]);
                    try {
                        if (lastStage) {
                            tapes[m].backward(outputs[m], Scalar.of(step, scale / microBatches));
                        } else {
                            tapes[m].backward(outputs[m], outputGradient, Scalar.of(step, scale / microBatches));
                        }
                    } finally {
                        tapes[m].setKey(null);
                        ctx.useTape(previous);
                        tapes[m] = null;
                        outputs[m] = null;
                    }
                    return inputGradients[m];
                }
            };
            int groupSize = microbatchGroupSize > 0 ? microbatchGroupSize : pp.size();
            PipelineSchedule schedule = PipelineSchedule.of(pp.size(), pp.rank(), chunks, n, groupSize, false);
            long s0 = System.nanoTime();
            new PipelineRunner(pp, stage.activationShape(shape.rows(), shape.seq()), stage.activationType())
                    .run(schedule, work, step);
            pipelineScheduleSeconds += (System.nanoTime() - s0) / 1e9;
            PipelineReplay replay = PipelineReplay.gather(pp, passSeconds, chunks, n, groupSize, step);
            replayedScheduleSeconds += replay.makespan();
            replayedComputeSeconds += replay.busy(pp.rank());
            if (peakHeld[0] >= 0) {
                heldBytes = peakHeld[0];
                measureHeld = false;
            }
            double lossSum = 0;
            for (int i = 0; i < pending.size(); i++) {
                lossSum += pending.get(i).getFloat(); // in micro-batch order, as without pipelining
            }
            NDArray sum = step.create(new double[] {lossSum});
            return pp.broadcast(sum, pp.size() - 1).getDouble(0);
        }
    }

    /** {@link #accumulateIntoMain()} over the range of the buffers holding {@code chunk}'s parameters only. */
    private void accumulateChunkIntoMain(List<TrainableParameter> chunk) {
        if (buffer != null) {
            long[] range = buffer.rangeOf(chunk);
            buffer.accumulateIntoMain(range[0], range[1]);
        } else {
            expertBuffers.accumulateIntoMain(chunk);
        }
    }

    /** Bytes the forwards of the micro-batches in flight keep for backward, over every model chunk. */
    private static long heldInFlight(NDManager[][] held) {
        long bytes = 0;
        for (NDManager[] chunk : held) {
            for (NDManager m : chunk) {
                bytes += m == null ? 0 : HeldMemory.bytes(m);
            }
        }
        return bytes;
    }

    /**
     * Megatron's embedding group: the first and the last stage both hold the tied word embedding;
     * each adds the other's gradient, so both apply the same update and stay equal.
     */
    private void reduceEmbeddingGroup(boolean inMain) {
        List<TrainableParameter> shared = ((PipelineStageModel) model).embeddingGroupParameters();
        for (TrainableParameter p : shared) {
            if (gradShard != null) { // ZeRO-2: after the data-parallel reductions, on the shards
                gradShard.reduceAcrossStages(p, this::withOtherStage);
                continue;
            }
            // the fp32 main gradient (a view of the buffer) once the micro-batches went into it
            try (NDArray g = inMain ? mainGradient(p) : p.array().getGradient(); NDArray sum = withOtherStage(g)) {
                g.subi(g).addi(sum);
            }
        }
    }

    /** First + last stage's {@code g}, in that order on both stages: bit-identical sums. */
    private NDArray withOtherStage(NDArray g) {
        int peer = pp.rank() == 0 ? pp.size() - 1 : 0;
        try (NDArray other = pp.sendRecv(g, peer, g.getManager(), g.getShape(), g.getDataType(), peer)) {
            return pp.rank() == 0 ? g.add(other) : other.add(g);
        }
    }

    /** A view of {@code p}'s fp32 main gradient in its buffer. */
    private NDArray mainGradient(TrainableParameter p) {
        ParamAndGradBuffer owner = buffer != null ? buffer : expertBuffers.dense(); // tied embeddings are dense
        return owner.mainGradOf(p);
    }

    /**
     * Global index of micro-batch {@code m}'s first sample in this iteration's global batch: the
     * batch sources split the global batch over DP ranks in order, then into micro-batches.
     */
    private long firstSample(int m) {
        return iteration * config.globalBatchSize() + (long) data.rank() * (config.globalBatchSize() / data.size())
                + (long) m * config.microBatchSize();
    }

    /**
     * This rank's pipeline bubble since the last {@link #resetPipelineTimes}: the time its schedule
     * spent waiting on other stages over the time it spent computing (Megatron's bubble fraction,
     * whose theory for 1F1B is {@code (p - 1) / m}); NaN without pipelining.
     */
    public double pipelineBubble() {
        return pipelineComputeSeconds == 0 ? Double.NaN
                : (pipelineScheduleSeconds - pipelineComputeSeconds) / pipelineComputeSeconds;
    }

    /**
     * This rank's bubble since the last {@link #resetPipelineTimes} with the steps replayed on one
     * device per stage from the measured pass times ({@link PipelineReplay}): what the schedule
     * costs when a waiting stage is not also waiting for a core; NaN without pipelining.
     */
    public double replayedPipelineBubble() {
        return replayedComputeSeconds == 0 ? Double.NaN
                : (replayedScheduleSeconds - replayedComputeSeconds) / replayedComputeSeconds;
    }

    /** Starts a new measurement of {@link #pipelineBubble} and {@link #replayedPipelineBubble}. */
    public void resetPipelineTimes() {
        pipelineComputeSeconds = 0;
        pipelineScheduleSeconds = 0;
        replayedComputeSeconds = 0;
        replayedScheduleSeconds = 0;
    }

    /**
     * Megatron's {@code --microbatch-group-size-per-virtual-pipeline-stage}: how many micro-batches
     * go through each model chunk before the next chunk's turn in the interleaved schedule
     * (default: the pipeline size); validated by {@link PipelineSchedule#of} at the first step.
     */
    public void setMicrobatchGroupSize(int groupSize) {
        this.microbatchGroupSize = groupSize;
    }

    /** Measures, in the next step's first micro-batch, the bytes its forward keeps for backward. */
    public void measureHeldBytes() {
        measureHeld = true;
    }

    /**
     * Bytes the last measured forward kept for backward on this rank ({@link HeldMemory}); -1 before.
     * Under pipelining: the peak, over the measured step, of what the forwards of the micro-batches
     * then in flight (1F1B's warm-up plus one on rank r: {@code p - r}) keep together.
     */
    public long heldBytes() {
        return heldBytes;
    }

    private record Update(double gradNorm, double lr, boolean skipped) {}

    private Update update(double scale, boolean inMain) {
        if (paramShards != null) {
            return updateFromShards(scale);
        }
        if (buffer != null) {
            return updateFromBuffer(scale, inMain);
        }
        try (NDManager s = state.newSubManager()) {
            NDArray grads;
            if (expertBuffers != null) {
                if (!inMain) {
                    expertBuffers.accumulateIntoMain(); // nothing for fp32 weights
                }
                expertBuffers.reduceGradients(overlapped != null); // overlapped: by finishStep, bucket by bucket
                if (inMain && (tensorParallelOnMain() || tensorParallelOnShard())) { // else finishStep completed them
                    expertBuffers.completeTensorParallel(tp); // after the data-parallel reduction: Megatron's order
                }
                grads = expertBuffers.joinReducedGradients(s);
            } else {
                grads = reduceOverDp(layout.gradients(s));
                if (expertLayout != null) {
                    grads = NDArrays.concat(new NDList(grads, reduceOverExpertDp(expertLayout.gradients(s))));
                }
            }
            if (scale != 1.0) {
                grads.muli((float) (1.0 / scale));
            }
            if (anyNonFinite(grads)) {
                return new Update(Double.NaN, 0, true);
            }
            double norm = expertLayout == null
                    ? Math.sqrt(sumOverModel(grads.square().mul(normMask).sum().getFloat()))
                    : Math.sqrt(sumOverModelWithExperts(grads.square().mul(normMask)));
            if (config.clipGrad() > 0) {
                double coeff = config.clipGrad() / (norm + 1e-6);
                if (coeff < 1.0) {
                    grads.muli((float) coeff);
                }
            }
            double lr = config.schedule().lr(updates);
            updates++;
            if (weightMasters != null) {
                optimizer.step(weightMasters, grads, decayMask, 1.0, lr, updates); // both shards where they are
            } else {
                optimizer.step(masters, grads, decayMask, lr, updates);
            }
            if (overlapped != null && overlapped.gathersParams()) {
                overlapped.startParamGather(masters, weightMasters); // expert parallelism: both parts, in the next forward
            } else {
                writeBackMasters();
            }
            return new Update(norm, lr, false);
        }
    }

    /**
     * The lean step over the buffer: bucketed all-reduce in place (or one reduce-scatter under the
     * distributed optimizer), then unscale, non-finite count and norm in one pass, then the
     * optimizer with the clipping folded in, in place on the weights when they are fp32.
     */
    private Update updateFromBuffer(double scale, boolean inMain) {
        try (NDManager s = state.newSubManager()) {
            // by finishStep, bucket by bucket, or by ZeRO-2 per micro-batch into its shard
            boolean reduced = overlapped != null || gradShard != null;
            if (!inMain) {
                buffer.accumulateIntoMain();
            }
            NDArray grads = gradShard != null ? gradShard.averaged(dp.size())
                    : overlapped != null ? overlapped.reducedGradients(shardStart, shardLength, s) : buffer.mainGrads();
            if (!reduced && dp.size() > 1 && config.distributedOptimizer()) {
                grads = buffer.reduceScatter(dp, dp.size());
                grads.attach(s);
                if (tensorParallelOnMain() && tp.size() > 1) {
                    grads = intoMainShard(grads, s); // completed there below
                }
            } else if (!reduced && dp.size() > 1) {
                buffer.allReduce(dp, dp.size());
            }
            if (tensorParallelOnMain()) {
                buffer.completeTensorParallel(tp); // after the data-parallel reduction: Megatron's order
            } else if (tensorParallelOnShard()) {
                gradShard.completeTensorParallel(tp);
            }
            double[] sumAndBad = TorchNative.unscaleAndNorm(grads, normMask, 1.0 / scale);
            boolean badScale = !scaler.isDynamic() && !Double.isFinite(scaler.scale());
            if (badScale || maxOverWorld(sumAndBad[1] > 0 ? 1f : 0f) > 0) {
                return new Update(Double.NaN, 0, true);
            }
            double norm = Math.sqrt(sumOverModel((float) sumAndBad[0]));
            double coeff = 1.0;
            if (config.clipGrad() > 0) {
                coeff = Math.min(1.0, config.clipGrad() / (norm + 1e-6));
            }
            double lr = config.schedule().lr(updates);
            updates++;
            optimizer.step(masters, grads, decayMask, coeff, lr, updates);
            if (overlapped != null && overlapped.gathersParams()) {
                overlapped.startParamGather(masters, null); // waited for in the next forward, bucket by bucket
            } else {
                writeBackMasters();
            }
            return new Update(norm, lr, false);
        }
    }

    /**
     * Copies this rank's reduced shard into its slice of the main gradient and returns that
     * slice (a view): the tensor-parallel completion runs over the main gradient, and TP peers
     * hold the same shard range, so the slice is completed with the rest (the other slices,
     * not reduced here, are summed too and not read).
     */
    private NDArray intoMainShard(NDArray shardGrads, NDManager s) {
        NDArray view = buffer.mainGrads().get(new NDIndex("{}:{}", shardStart, shardStart + shardLength));
        view.attach(s);
        view.set(new NDIndex("..."), shardGrads);
        return view;
    }

    /**
     * ZeRO-3's update: the averaged gradient shard, the one-pass unscale/non-finite/norm, the
     * optimizer on this rank's masters; no all-gather (the next forward gathers layer by layer).
     */
    private Update updateFromShards(double scale) {
        paramShards.completeTensorParallel(tp); // Megatron's order: DP (per micro-batch), then TP on the main gradient
        NDArray grads = paramShards.averagedGradients(dp.size()); // experts too: the mean over all the batch's tokens
        double[] sumAndBad = TorchNative.unscaleAndNorm(grads, normMask, 1.0 / scale);
        boolean badScale = !scaler.isDynamic() && !Double.isFinite(scaler.scale());
        if (badScale || maxOverWorld(sumAndBad[1] > 0 ? 1f : 0f) > 0) {
            return new Update(Double.NaN, 0, true);
        }
        // every element once over data x context: under EP its ranks are expert-parallel x expert-data, and each
        // expert unit is sharded over expert-data, so the expert parallel ranks' other experts are counted too
        double norm = Math.sqrt(sumOverModel((float) sumAndBad[0]));
        double coeff = config.clipGrad() > 0 ? Math.min(1.0, config.clipGrad() / (norm + 1e-6)) : 1.0;
        double lr = config.schedule().lr(updates);
        updates++;
        optimizer.step(masters, grads, decayMask, coeff, lr, updates);
        paramShards.setShards(masters);
        return new Update(norm, lr, false);
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

    /**
     * Expert gradients: summed over the expert-data-parallel group (the ranks holding the same
     * experts; their rows came from every rank of the expert-parallel group) and divided by the
     * whole data-parallel size, as Megatron's DDP scales them: the mean over all the batch's tokens.
     */
    private NDArray reduceOverExpertDp(NDArray grads) {
        NDArray reduced = grads;
        if (expertDp.size() > 1) {
            reduced = config.distributedOptimizer() ? expertDp.reduceScatter(grads, 0, ReduceOp.SUM)
                    : expertDp.allReduce(grads, ReduceOp.SUM);
        }
        return reduced.divi(dp.size());
    }

    /**
     * Sum of squares with experts: the dense part as {@link #sumOverModel}, the expert part over the
     * expert-parallel group too (each EP rank holds other experts).
     */
    private double sumOverModelWithExperts(NDArray squares) {
        long dense = shardLength;
        try (NDManager s = state.newSubManager()) {
            NDArray d = squares.get(new NDIndex("0:{}", dense)).sum().reshape(1);
            NDArray e = squares.get(new NDIndex("{}:", dense)).sum().reshape(1);
            d.attach(s);
            e.attach(s);
            if (config.distributedOptimizer() && dp.size() > 1) {
                d = dp.allReduce(d, ReduceOp.SUM);
            }
            if (config.distributedOptimizer() && expertDp.size() > 1) {
                e = expertDp.allReduce(e, ReduceOp.SUM);
            }
            e = ep.allReduce(e, ReduceOp.SUM);
            NDArray total = tp.allReduce(d.add(e), ReduceOp.SUM);
            if (pp.size() > 1) {
                total = pp.allReduce(total, ReduceOp.SUM);
            }
            return total.getFloat(0);
        }
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
            if (pp.size() > 1) {
                m = pp.allReduce(m, ReduceOp.MAX);
            }
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
            if (pp.size() > 1) {
                sum = pp.allReduce(sum, ReduceOp.SUM);
            }
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
        awaitParamGather();
        if (paramShards != null) {
            paramShards.setShards(masters); // the next forward gathers
            return;
        }
        if (buffer != null) {
            if (config.distributedOptimizer() && dp.size() > 1) {
                try (NDArray full = dp.allGather(masters, 0)) {
                    buffer.setParams(full);
                }
            } else {
                buffer.setParams(masters); // nothing when the masters are the fp32 weights
            }
            return;
        }
        if (weightMasters != null) {
            expertBuffers.writeBack(weightMasters);
            return;
        }
        if (expertBuffers != null) {
            expertBuffers.writeBack(masters);
            return;
        }
        NDArray dense = expertLayout == null ? masters : masters.get(new NDIndex("0:{}", shardLength));
        NDArray full = config.distributedOptimizer() && dp.size() > 1 ? dp.allGather(dense, 0) : dense;
        layout.writeBack(full);
        if (full != masters) {
            full.close();
        }
        if (expertLayout != null) {
            NDArray experts = masters.get(new NDIndex("{}:", shardLength));
            NDArray all = config.distributedOptimizer() && expertDp.size() > 1 ? expertDp.allGather(experts, 0) : experts;
            expertLayout.writeBack(all);
            if (all != experts) {
                all.close();
            }
            experts.close();
            if (full != dense) {
                dense.close();
            }
        }
    }

    /**
     * The fp32 masters as a checkpoint records them: {@link #masters()}, except under ZeRO-3, whose
     * unit-by-unit shards are converted into the distributed optimizer's order (so its checkpoints
     * are {@code optim}'s; collective over data parallelism), in {@code m}.
     */
    public NDArray checkpointMasters(NDManager m) {
        if (weightMasters != null) { // the weights' two shards, joined for the file
            NDArray joined = NDArrays.concat(new NDList(weightMasters.toArray(new NDArray[0])));
            joined.attach(m);
            return joined;
        }
        return paramShards == null ? masters : paramShards.toOptimizerOrder(masters, m);
    }

    /** The optimizer's state as a checkpoint records it, converted as {@link #checkpointMasters}. Collective under ZeRO-3. */
    public java.util.Map<String, NDArray> checkpointOptimizerState(NDManager m) {
        java.util.Map<String, NDArray> out = new java.util.LinkedHashMap<>();
        optimizer.state().forEach((k, v) -> out.put(k, paramShards == null || v.getShape().size() != shardLength
                ? v : paramShards.toOptimizerOrder(v, m)));
        return out;
    }

    /** Elements of {@link #checkpointMasters} on this rank. */
    public long checkpointLength() {
        if (weightMasters != null) {
            return weightMasters.stream().mapToLong(p -> p.getShape().size()).sum();
        }
        if (paramShards == null) {
            return masters.getShape().get(0);
        }
        return layout.paddedSize() / dp.size() + (expertLayout == null ? 0 : expertLayout.paddedSize() / expertDp.size());
    }

    /**
     * Sets the masters and the optimizer's state from a checkpoint's (laid out as
     * {@link #checkpointMasters}; converted back under ZeRO-3, collectively) and writes the
     * weights as {@link #writeBackMasters} does. Takes ownership of the arrays it is given.
     */
    public void restoreOptimizer(NDArray savedMasters, java.util.Map<String, NDArray> savedState) {
        java.util.Map<String, NDArray> optState = new java.util.LinkedHashMap<>();
        if (paramShards != null) {
            long flat = savedMasters.getShape().size();
            try (NDArray m = paramShards.fromOptimizerOrder(savedMasters, state)) {
                masters.set(new NDIndex("..."), m);
            }
            savedState.forEach((k, v) -> {
                if (v.getShape().size() == flat) {
                    optState.put(k, paramShards.fromOptimizerOrder(v, state));
                    v.close();
                } else {
                    optState.put(k, v);
                }
            });
            savedMasters.close();
        } else {
            setMasters(savedMasters);
            savedMasters.close();
            optState.putAll(savedState);
        }
        optimizer.loadState(optState);
    }

    /** Copies {@code values} (laid out as {@link #checkpointMasters}) into the masters. */
    private void setMasters(NDArray values) {
        if (weightMasters == null) {
            masters.set(new NDIndex("..."), values);
        } else {
            FlatOptimizer.splitInto(values, weightMasters);
        }
    }

    /** Whether this rank keeps only its shard of the weights between steps (ZeRO-3). */
    public boolean shardsParameters() {
        return paramShards != null;
    }

    /**
     * ZeRO-3: all-gathers every layer's weights (collective over data parallelism), for readers of
     * whole weights between steps (logits at the end of a run); the next step frees them. Nothing
     * under the other strategies, which keep whole weights.
     */
    public void gatherWeights() {
        if (paramShards != null) {
            paramShards.gatherAll();
        }
    }

    /** ZeRO-3: frees the weights {@link #gatherWeights} or an evaluation gathered. Nothing otherwise. */
    public void releaseWeights() {
        if (paramShards != null) {
            paramShards.releaseAll();
        }
    }

    /**
     * Under {@code --overlap-param-gather}: waits until every weight holds the last update (the
     * next forward waits by itself; a checkpoint save between steps calls this). Nothing otherwise.
     */
    public void awaitParamGather() {
        if (overlapped != null) {
            overlapped.awaitParams();
        }
    }

    /**
     * Under {@code --overlap-grad-reduce}: seconds of overlapped communication so far and the part
     * the compute thread waited for; null without overlap.
     */
    public double[] overlapSeconds() {
        if (overlapped == null) {
            return paramShards == null ? null : paramShards.communicationAndWaitSeconds();
        }
        return overlapped.communicationAndWaitSeconds();
    }

    private NDArray shard(NDArray full) {
        NDArray piece = full.get(new NDIndex("{}:{}", shardStart, shardStart + shardLength)).duplicate();
        piece.attach(state);
        return piece;
    }

    /** Bytes of fp32 masters plus optimizer state held by this rank. */
    public long optimizerBytes() {
        if (buffer != null && buffer.weightsAreFp32() || paramShards != null && masters == paramShards.shards()
                || weightMasters != null) {
            return optimizer.stateBytes(); // the fp32 weights are their own masters
        }
        return (shardLength + expertShardLength) * 4 + optimizer.stateBytes();
    }

    /**
     * Bytes of model state this rank holds between steps, measured from the arrays it keeps: the
     * weights (the parameter buffer, or the parameters), the gradients kept between micro-batches
     * (the gradient buffers, or each parameter's {@code .grad}; ZeRO-2 and 3: the fp32 shard; ZeRO-3's
     * weights: the shards plus whatever layer storage is gathered at the moment) and
     * {@link #optimizerBytes()}.
     */
    public RankMemory memory() {
        long params = 0;
        long grads = 0;
        for (TrainableParameter p : model.trainableParameters()) {
            long bytes = p.array().getShape().size() * p.array().getDataType().getNumOfBytes();
            params += bytes;
            grads += bytes; // libtorch keeps a .grad of the parameter's dtype after the first backward
        }
        if (paramShards != null) {
            params = paramShards.parameterBytes();
            grads = paramShards.gradientBytes();
        } else if (buffer != null) {
            params = buffer.parameterBytes();
            grads = gradShard != null ? gradShard.bytes() : buffer.gradientBytes();
        } else if (expertBuffers != null) {
            params = expertBuffers.parameterBytes();
            grads = expertBuffers.gradientBytes();
        }
        return new RankMemory(params, grads, optimizerBytes());
    }

    public FlatOptimizer optimizer() {
        return optimizer;
    }

    public LossScaler scaler() {
        return scaler;
    }

    /**
     * This rank's fp32 masters (its DP shard under the distributed optimizer); null under expert
     * parallelism with fp32 weights, whose masters are the weights' shards ({@link #checkpointMasters}).
     */
    public NDArray masters() {
        return masters;
    }

    /** The manager of this rank's optimizer state (masters, moments), for arrays that become part of it. */
    public NDManager stateManager() {
        return state;
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

    /**
     * Starts a step whose micro-batches run their forward and backward passes outside this class
     * (DJL's {@code EasyTrain} through {@code ParallelTrainer}): zeroes the gradients and returns the
     * loss scale; each micro-batch's loss is back-propagated with {@code scale / microBatchesPerStep()},
     * under the tape key {@link #microBatchKey}. Not with pipelining (its schedule interleaves the passes).
     */
    public double beginExternalStep() {
        if (pp.size() > 1) {
            throw new IllegalStateException("an external step cannot run a pipeline schedule (pipeline size "
                    + pp.size() + "); use step(List<MicroBatch>)");
        }
        if (shardsGradients() || paramShards != null) {
            throw new IllegalStateException("an external step cannot run --data-parallel-sharding-strategy "
                    + (paramShards != null ? "optim_grads_params" : "optim_grads")
                    + " (it reduce-scatters inside step(List<MicroBatch>))");
        }
        zeroGradients(); // the main gradient too: the update adds the step's gradients into it
        return scaler.scale();
    }

    /** The tape key (dropout masks) of micro-batch {@code m} of the current step, as {@link #step} uses. */
    public RandomKey microBatchKey(int m) {
        return new RandomKey(iteration, firstSample(m));
    }

    /**
     * Completes a step begun by {@link #beginExternalStep} once every micro-batch's backward ran:
     * gradient completion, the update and the counters, as {@link #step} does after its passes.
     *
     * @param lossSum the sum of this rank's micro-batch losses, in micro-batch order
     */
    public StepResult completeExternalStep(long startNanos, double scale, double lossSum, long tokens) {
        return finishStep(startNanos, scale, lossSum, tokens, false);
    }

    @Override
    public void close() {
        if (overlapped != null) {
            overlapped.close();
        }
        if (paramShards != null) {
            paramShards.close();
        }
        state.close();
    }

}
