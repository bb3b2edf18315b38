package org.djlmegatron.training.buffers;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import org.djlmegatron.comm.CommThread;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.parallel.RankContext;

/**
 * What the training step overlaps on one rank ({@link Overlap}): the gradient buckets'
 * reduction during the last backward ({@link BucketReducer}) and, under the distributed optimizer,
 * the parameter all-gather during the next forward ({@link ParamGatherer}), both on one
 * {@link CommThread} so that the data-parallel group sees one sequence of calls. Wired to the
 * rank's tape: gradient-final reports start buckets, parameter uses wait for gathered chunks.
 */
public final class OverlappedCommunication implements AutoCloseable {

    private final ParamAndGradBuffer buffer;
    private final CommThread comm;
    private final BucketReducer reducer;
    private final ParamGatherer gatherer;
    private final Overlap overlap;
    private boolean closed;
    private long waitedNanos;

    private OverlappedCommunication(RankContext ctx, ParamAndGradBuffer buffer, ProcessGroup dp, long bucketElements,
            Overlap overlap) {
        this.buffer = buffer;
        this.overlap = overlap;
        comm = new CommThread("rank-" + ctx.rank() + "-comm");
        reducer = new BucketReducer(buffer, dp, dp.size(), comm,
                overlap);
        gatherer = overlap.paramGather() ? new ParamGatherer(buffer, dp, bucketElements, comm, overlap) : null;
        ctx.tape().onGradientsFinal(done -> {
            if (!closed) {
                reducer.gradientsFinal(done);
            }
        });
        if (gatherer != null) {
            ctx.tape().onUse(p -> {
                if (!closed) {
                    long t0 = System.nanoTime();
                    gatherer.awaitUse(p);
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
     * @param gradientsSharded whether ZeRO-2 keeps only a gradient shard (refused with overlap)
     * @param distributedOptimizer whether the optimizer is sharded over {@code dp}
     * @param bucketElements {@code --ddp-bucket-size}
     */
    public static OverlappedCommunication create(RankContext ctx, ParamAndGradBuffer buffer, ProcessGroup dp,
            boolean gradientsSharded, boolean distributedOptimizer, long bucketElements, Overlap overlap) {
        if (!overlap.any()) {
            return null;
        }
        if (overlap.paramGather() && !distributedOptimizer) {
            throw new IllegalArgumentException("--overlap-param-gather needs --use-distributed-optimizer "
                    + "(without it every rank holds all the updated weights: there is nothing to gather)");
        }
        if (buffer == null) {
            throw new IllegalArgumentException("--overlap-grad-reduce needs the contiguous gradient buffers, which "
                    + "this run does not use: they need the project's native library (docs/native.md) and "
                    + "-Ddjlm.gradBuffers not false");
        }
        if (gradientsSharded) {
            throw new IllegalArgumentException("--overlap-grad-reduce with --data-parallel-sharding-strategy optim_grads "
                    + "is not supported yet (ZeRO-2 reduce-scatters each micro-batch's gradients as it ends); use optim");
        }
        return dp.size() > 1 ? new OverlappedCommunication(ctx, buffer, dp, bucketElements, overlap) : null;
    }

    /**
     * After micro-batch {@code m}'s forward, before its backward: the last one's backward starts
     * buckets as they finish. After the first forward, the gathers it did not wait for are
     * waited for (weights no use reported); a model that reported no use at all is refused, since
     * its forward may have read weights of the previous step.
     */
    public void afterForward(int m, int microBatches) {
        if (m == 0 && gatherer != null) {
            if (gatherer.pendingUnreported()) {
                throw new IllegalStateException("--overlap-param-gather: the model reported no parameter use in its "
                        + "forward (Tape.noteUse), so it may have read weights before their all-gather finished");
            }
            long t0 = System.nanoTime();
            gatherer.awaitAll();
            waitedNanos += System.nanoTime() - t0;
        }
        if (m == microBatches - 1) {
            reducer.arm();
        }
    }

    /** Starts the buckets not started yet and waits for all of them (before anything reads the gradients). */
    public void finishGradients() {
        long t0 = System.nanoTime();
        try {
            if (gatherer != null) {
                gatherer.awaitAll();
            }
            reducer.finish();
        } finally {
            waitedNanos += System.nanoTime() - t0;
        }
    }

    /**
     * Seconds of overlapped communication so far and the part of them the compute thread spent
     * waiting for it ({@code 1 - waited / communication} of it was hidden behind compute).
     */
    public double[] communicationAndWaitSeconds() {
        return new double[] {comm.busySeconds(), waitedNanos / 1e9};
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

    /** Whether the updated weights are gathered here ({@code --overlap-param-gather}). */
    public boolean gathersParams() {
        return gatherer != null;
    }

    /** After the optimizer: starts gathering the updated shards. */
    public void startParamGather(NDArray masters) {
        gatherer.start(masters);
    }

    /** Waits until every weight holds the last update. */
    public void awaitParams() {
        if (gatherer != null) {
            gatherer.awaitAll();
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
            comm.closeAndWait(overlap.waitLimit());
        }
    }
}
