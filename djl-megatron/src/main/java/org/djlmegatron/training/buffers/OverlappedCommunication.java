package org.djlmegatron.training.buffers;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import java.util.List;
import org.djlmegatron.autograd.Tape;
import org.djlmegatron.comm.CommThread;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.training.model.TrainableParameter;

/**
 * What the training step overlaps on one rank ({@link Overlap}): the gradient buckets'
 * reduction during the last backward, or under ZeRO-2 during every micro-batch's backward over its
 * workspace ({@link BucketReducer}, {@link GradientShard}) and, under the distributed optimizer,
 * the parameter all-gather during the next forward ({@link ParamGatherer}), both on one
 * {@link CommThread} and on a communicator of their own over the data-parallel ranks
 * ({@link GroupKind#DATA_CONTEXT_OVERLAP}), so that their sequence of calls never interleaves with
 * what the step or the driver calls on the data group meanwhile. Under expert parallelism the
 * expert buffer's reduction and gather run likewise on a second thread over the expert-data ranks.
 * Wired to the rank's tape (under pipelining, every micro-batch's): gradient-final reports start
 * buckets, parameter uses wait for gathered chunks.
 */
public final class OverlappedCommunication implements AutoCloseable {

    /**
     * One buffer's overlapped work on a thread of its own, so that its group sees one sequence of
     * calls from one thread: the dense buffer's, and under expert parallelism the expert buffer's.
     *
     * @param shard ZeRO-2's gradient shard of this buffer, whose per-micro-batch workspaces are
     *     reduced; null: the buffer's main gradient, in the last backward
     * @param gatherer its {@code --overlap-param-gather}; null without
     * @param mastersOffset where its shard starts in the optimizer's masters
     * @param mastersAreWeights whether the masters are a view of this rank's slice of its weights
     */
    private record Lane(ParamAndGradBuffer buffer, GradientShard shard, CommThread comm, BucketReducer reducer,
            ParamGatherer gatherer, long mastersOffset, boolean mastersAreWeights) {

        /**
         * ZeRO-2 sums each micro-batch into its shard and averages the shard once, after the last
         * (divisor 1); 16-bit pieces are widened and added into the shard by their owners.
         */
        static Lane of(String thread, ParamAndGradBuffer buffer, GradientShard shard, ProcessGroup group, int divisor,
                boolean toOwners, long bucketElements, Overlap overlap, long mastersOffset, boolean mastersAreWeights) {
            CommThread comm = new CommThread(thread);
            GradientShard wideInto = shard != null && !buffer.weightsAreFp32() ? shard : null;
            BucketReducer reducer = new BucketReducer(buffer, group, shard != null ? 1 : divisor, toOwners, wideInto,
                    comm, overlap);
            return new Lane(buffer, shard, comm, reducer,
                    overlap.paramGather() ? new ParamGatherer(buffer, group, bucketElements, comm, overlap) : null,
                    mastersOffset, mastersAreWeights);
        }
    }

    /** The dense buffer's lane first; under expert parallelism the expert buffer's second. */
    private final List<Lane> lanes;
    /** The dense buffer. */
    private final ParamAndGradBuffer buffer;
    private final Overlap overlap;
    private boolean closed;
    private long waitedNanos;

    private OverlappedCommunication(RankContext ctx, ParamAndGradBuffer buffer, ProcessGroup dp, GradientShard gradShard,
            boolean toOwners, long bucketElements, Overlap overlap) {
        this.buffer = buffer;
        this.overlap = overlap;
        ProcessGroup async = ctx.overlapGroup(GroupKind.DATA_CONTEXT); // dp's ranks, a communicator of its own
        lanes = List.of(Lane.of("rank-" + ctx.rank() + "-comm", buffer, gradShard, async, dp.size(), toOwners,
                bucketElements, overlap, 0, buffer.weightsAreFp32()));
        listenTo(ctx.tape());
    }

    /**
     * Expert parallelism: the dense buffer over {@code dp}'s ranks, the expert buffer over the
     * expert-data group's, both divided by DP's size (under ZeRO-2 each into its own gradient
     * shard); the masters are the weights' shards (fp32, see {@link #startParamGather}) or a copy
     * of them (16-bit: dense shard, expert shard).
     */
    private OverlappedCommunication(RankContext ctx, ExpertBuffers buffers, ProcessGroup dp, boolean toOwners,
            long bucketElements, Overlap overlap) {
        this.buffer = buffers.dense();
        this.overlap = overlap;
        lanes = List.of(
                Lane.of("rank-" + ctx.rank() + "-comm", buffer, buffers.denseShard(),
                        ctx.overlapGroup(GroupKind.DATA_CONTEXT), dp.size(), toOwners, bucketElements, overlap, 0, false),
                Lane.of("rank-" + ctx.rank() + "-expert-comm", buffers.experts(), buffers.expertShard(),
                        ctx.overlapGroup(GroupKind.EXPERT_DATA), dp.size(), toOwners, bucketElements, overlap,
                        buffers.denseShardLength(), false));
        listenTo(ctx.tape());
    }

    /**
     * The overlap for a step under expert parallelism ({@code --overlap-grad-reduce}, and
     * {@code --overlap-param-gather} under the distributed optimizer; fp32 or 16-bit weights, with
     * or without gradient shards), or null when off or at DP 1.
     */
    public static OverlappedCommunication createForExperts(RankContext ctx, ExpertBuffers buffers, ProcessGroup dp,
            boolean distributedOptimizer, boolean wholeGradients, long bucketElements, Overlap overlap) {
        if (!overlap.any()) {
            return null;
        }
        refuseShardsUnderPipelining(ctx, buffers != null && buffers.shardsGradients());
        if (overlap.paramGather() && !distributedOptimizer) {
            throw new IllegalArgumentException("--overlap-param-gather needs --use-distributed-optimizer "
                    + "(without it every rank holds all the updated weights: there is nothing to gather)");
        }
        if (buffers == null) {
            throw new IllegalArgumentException("--overlap-grad-reduce with --expert-model-parallel-size "
                    + ctx.group(GroupKind.EXPERT).size() + " needs the contiguous buffers (the project's native library, "
                    + "-Ddjlm.gradBuffers not false)");
        }
        return dp.size() > 1
                ? new OverlappedCommunication(ctx, buffers, dp, distributedOptimizer && !wholeGradients, bucketElements,
                        overlap)
                : null;
    }

    /** ZeRO-2 under pipelining reduce-scatters each backward's gradients as it ends: no overlap there. */
    private static void refuseShardsUnderPipelining(RankContext ctx, boolean shardsGradients) {
        ProcessGroup pp = ctx.group(GroupKind.PIPELINE);
        if (pp.size() > 1 && shardsGradients) {
            throw new IllegalArgumentException("--overlap-grad-reduce with --pipeline-model-parallel-size " + pp.size()
                    + " runs with --data-parallel-sharding-strategy no_shard or optim; found optim_grads (the pipeline "
                    + "schedule reduce-scatters each backward's gradients into the shard as it ends); leave "
                    + "--overlap-grad-reduce off");
        }
    }

    /**
     * Wires {@code tape}'s backward progress to the bucket reductions and its parameter uses to
     * the gathers: the rank's tape, and under pipelining each micro-batch's own tape.
     */
    public void listenTo(Tape tape) {
        tape.onGradientsFinal(done -> {
            if (!closed) {
                lanes.forEach(l -> l.reducer().gradientsFinal(done));
            }
        });
        if (gathersParams()) {
            tape.onUse(p -> {
                if (!closed) {
                    long t0 = System.nanoTime();
                    lanes.forEach(l -> l.gatherer().awaitUse(p));
                    waitedNanos += System.nanoTime() - t0;
                }
            });
        }
    }

    /**
     * The overlap for a step, or null when nothing is overlapped (off, or one data-parallel rank:
     * nothing to reduce). Refuses, naming the flags, what cannot be overlapped here.
     *
     * @param buffer the step's buffer, null when it takes the flat-vector path
     * @param gradShard ZeRO-2's gradient shard (each micro-batch's workspace is reduced); null without ZeRO-2
     * @param distributedOptimizer whether the optimizer is sharded over {@code dp} (then each piece of a
     *     bucket is reduced to its owner only, unless {@code wholeGradients})
     * @param wholeGradients whether the step reads more than this rank's slice of the reduced
     *     gradients: the tied embedding's exchange between the first and the last pipeline stage,
     *     whose buffers place it differently (Megatron gives it a bucket of its own instead); then
     *     every bucket is all-reduced
     * @param bucketElements {@code --ddp-bucket-size}
     */
    public static OverlappedCommunication create(RankContext ctx, ParamAndGradBuffer buffer, ProcessGroup dp,
            GradientShard gradShard, boolean distributedOptimizer, boolean wholeGradients, long bucketElements,
            Overlap overlap) {
        if (!overlap.any()) {
            return null;
        }
        refuseShardsUnderPipelining(ctx, gradShard != null);
        if (overlap.paramGather() && !distributedOptimizer) {
            throw new IllegalArgumentException("--overlap-param-gather needs --use-distributed-optimizer "
                    + "(without it every rank holds all the updated weights: there is nothing to gather)");
        }
        if (buffer == null) {
            throw new IllegalArgumentException("--overlap-grad-reduce needs the contiguous gradient buffers, which "
                    + "this run does not use: they need the project's native library (docs/native.md) and "
                    + "-Ddjlm.gradBuffers not false");
        }
        return dp.size() > 1
                ? new OverlappedCommunication(ctx, buffer, dp, gradShard, distributedOptimizer && !wholeGradients,
                        bucketElements, overlap)
                : null;
    }

    /**
     * After micro-batch {@code m}'s forward, before its backward: the last one's backward (every
     * one's under ZeRO-2, over its workspace) starts buckets as they finish. After the first
     * forward, the gathers it did not wait for are waited for (weights no use reported); a model
     * that reported no use at all is refused, since its forward may have read weights of the
     * previous step.
     */
    public void afterForward(int m, int microBatches) {
        if (m == 0) {
            afterFirstForward();
        }
        if (shardsGradients()) {
            lanes.forEach(l -> l.reducer().arm(l.shard().workspace()));
        } else if (m == microBatches - 1) {
            lanes.forEach(l -> l.reducer().arm(l.buffer().mainGrads()));
        }
    }

    /**
     * After the step's first forward (under pipelining: this stage's first forward pass), the
     * gathers it did not wait for are waited for; a model that reported no use is refused.
     */
    public void afterFirstForward() {
        if (!gathersParams()) {
            return;
        }
        if (lanes.stream().anyMatch(l -> l.gatherer().pendingUnreported())) {
            throw new IllegalStateException("--overlap-param-gather: the model reported no parameter use in its "
                    + "forward (Tape.noteUse), so it may have read weights before their all-gather finished");
        }
        long t0 = System.nanoTime();
        awaitParams();
        waitedNanos += System.nanoTime() - t0;
    }

    /**
     * Under pipelining, before a model chunk's last micro-batch's backward: its buckets start as
     * that backward finishes them (Megatron's grad sync of a chunk in its last micro-batch).
     */
    public void armChunk(List<TrainableParameter> chunkParameters) {
        lanes.forEach(l -> l.reducer().arm(l.buffer().mainGrads(), chunkParameters));
    }

    /**
     * ZeRO-2, after a micro-batch's backward: starts its buckets not started yet and waits for all
     * of them; this rank's slice of the workspace then holds the micro-batch's sum over the group.
     */
    public void finishMicroBatch() {
        long t0 = System.nanoTime();
        try {
            lanes.forEach(l -> l.reducer().finish());
        } finally {
            waitedNanos += System.nanoTime() - t0;
        }
    }

    /**
     * Starts the buckets not started yet and waits for all of them (before anything reads the
     * gradients); under ZeRO-2, whose micro-batches were each finished, only the gathers.
     */
    public void finishGradients() {
        long t0 = System.nanoTime();
        try {
            awaitParams();
            if (!shardsGradients()) { // ZeRO-2 finished each micro-batch
                lanes.forEach(l -> l.reducer().finish());
            }
        } finally {
            waitedNanos += System.nanoTime() - t0;
        }
    }

    /**
     * Seconds of overlapped communication so far and the part of them the compute thread spent
     * waiting for it ({@code 1 - waited / communication} of it was hidden behind compute).
     */
    public double[] communicationAndWaitSeconds() {
        double busy = lanes.stream().mapToDouble(l -> l.comm().busySeconds()).sum();
        return new double[] {busy, waitedNanos / 1e9};
    }

    /**
     * The reduced gradients the optimizer takes (after {@link #finishGradients}): all of the main
     * gradient, or this rank's shard of it under the distributed optimizer (a view, attached to {@code scratch}).
     */
    public NDArray reducedGradients(long shardStart, long shardLength, NDManager scratch) {
        NDArray main = buffer.mainGrads();
        if (shardLength == buffer.paddedSize()) {
            return main;
        }
        NDArray view = main.get(new NDIndex("{}:{}", shardStart, shardStart + shardLength));
        view.attach(scratch);
        return view;
    }

    /** Whether each micro-batch's gradients are reduced into gradient shards (ZeRO-2). */
    private boolean shardsGradients() {
        return lanes.get(0).shard() != null;
    }

    /** Whether the updated weights are gathered here ({@code --overlap-param-gather}). */
    public boolean gathersParams() {
        return lanes.get(0).gatherer() != null;
    }

    /**
     * After the optimizer: starts gathering the updated shards, from {@code masters} (the
     * optimizer's vector, each lane's shard at its offset) or, where fp32 weights under expert
     * parallelism are their own masters, from {@code weightShards} (each lane's shard of its weights).
     */
    public void startParamGather(NDArray masters, List<NDArray> weightShards) {
        for (int i = 0; i < lanes.size(); i++) {
            Lane l = lanes.get(i);
            if (weightShards != null) {
                l.gatherer().start(weightShards.get(i), 0, true);
            } else {
                l.gatherer().start(masters, l.mastersOffset(), l.mastersAreWeights());
            }
        }
    }

    /** Waits until every weight holds the last update. */
    public void awaitParams() {
        if (gathersParams()) {
            lanes.forEach(l -> l.gatherer().awaitAll());
        }
    }

    /**
     * Waits for the last parameter gather (every rank that finished a step started it, so it
     * completes; the weights are then current for whatever follows), then stops the thread.
     * Bucket reductions of a step that failed are not waited for.
     */
    @Override
    public void close() {
        closed = true;
        try {
            awaitParams();
        } finally {
            // the work still queued or running reads the step's buffers, which its owner frees next
            lanes.forEach(l -> l.comm().closeAndWait(overlap.waitLimit()));
        }
    }
}
