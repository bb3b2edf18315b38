package org.djlmegatron.training.buffers;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.List;
import java.util.function.UnaryOperator;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.training.model.TrainableParameter;

/**
 * ZeRO-2 ({@code --data-parallel-sharding-strategy optim_grads}) over a {@link ParamAndGradBuffer}
 * built without persistent gradients: between micro-batches this rank keeps only its 1/DP shard of
 * the fp32 main gradient. Each micro-batch's backward accumulates into a full-size workspace in the
 * weights' dtype ({@link #beginMicroBatch}); after it, the workspace (cast to fp32) is
 * reduce-scattered over the data-parallel group and added into the shard, and the workspace and
 * the parameters' references to it are dropped ({@link #endMicroBatch}), so a 16-bit gradient is
 * never accumulated over micro-batches in 16 bits. The peak during a backward still holds one
 * full-size gradient; the price is one reduce-scatter per micro-batch instead of one per step.
 * Under {@code --overlap-grad-reduce} the workspace's buckets are instead reduced to their owners
 * during the backward ({@link BucketReducer}) and {@link #endOverlappedMicroBatch} only adds this
 * rank's slice of it into the shard; with 16-bit weights each bucket is widened first and its
 * owner adds the fp32 sum into the shard itself ({@link #addReduced}), so nothing is summed in 16
 * bits. With 16-bit weights the partial (sequence-parallel) gradients are completed over tensor
 * parallelism once per step, on the fp32 shard ({@link #completeTensorParallel}), after the
 * data-parallel reduction: Megatron's order, the same with and without overlap.
 */
public final class GradientShard implements AutoCloseable {

    private final ParamAndGradBuffer buffer;
    private final ProcessGroup group;
    private final NDManager manager;
    private final NDArray shard;
    /** The current micro-batch's full-size gradients and their manager; null between micro-batches. */
    private NDManager workspace;
    private NDArray grads;

    /** A zeroed fp32 shard of {@code buffer.paddedSize() / group.size()} elements. */
    public GradientShard(ParamAndGradBuffer buffer, ProcessGroup group, NDManager parent) {
        if (buffer.mainGrads() != null) {
            throw new IllegalArgumentException("ZeRO-2 needs a buffer without persistent gradients");
        }
        this.buffer = buffer;
        this.group = group;
        manager = parent.newSubManager();
        shard = manager.zeros(new Shape(buffer.paddedSize() / group.size()), DataType.FLOAT32);
    }

    /** Zeroes the shard before a step's first micro-batch. */
    public void zero() {
        shard.set(new NDIndex("..."), 0f); // a fill: an overflow's inf must not linger as NaN
    }

    /** Binds the parameters' gradients to a new zeroed full-size workspace for one micro-batch's backward. */
    public void beginMicroBatch() {
        if (workspace != null) {
            throw new IllegalStateException("a micro-batch's gradients are still bound (endMicroBatch not called)");
        }
        workspace = manager.newSubManager();
        grads = workspace.zeros(new Shape(buffer.paddedSize()), buffer.params().getDataType());
        buffer.bindGradients(grads);
    }

    /** The current micro-batch's full-size gradients (the parameters' .grad view them); null between micro-batches. */
    public NDArray workspace() {
        return grads;
    }

    /**
     * After the micro-batch's backward and its tensor-parallel gradient completion: adds this
     * rank's reduce-scattered sum of the workspace into the shard, then frees the workspace.
     * Collective over the data-parallel group.
     */
    public void endMicroBatch() {
        requireBound();
        try {
            NDArray wide = buffer.weightsAreFp32() ? grads : grads.toType(DataType.FLOAT32, false);
            try (NDArray part = group.size() == 1 ? wide.duplicate() : group.reduceScatter(wide, 0, ReduceOp.SUM)) {
                shard.addi(part);
            }
        } finally {
            drop();
        }
    }

    /**
     * After an overlapped micro-batch (fp32 weights): its buckets were reduced to their owners, so
     * this rank's slice of the workspace holds its sum over the group (tensor-parallel completion
     * included); adds that slice into the shard, then frees the workspace. Not collective.
     */
    public void endOverlappedMicroBatch() {
        requireBound();
        try {
            if (!buffer.weightsAreFp32()) {
                return; // the owners added the widened sums themselves (addReduced)
            }
            long n = shard.getShape().get(0);
            try (NDArray mine = grads.get(new NDIndex("{}:{}", group.rank() * n, (group.rank() + 1) * n))) {
                shard.addi(mine);
            }
        } finally {
            drop();
        }
    }

    private void requireBound() {
        if (workspace == null) {
            throw new IllegalStateException("no micro-batch's gradients are bound (beginMicroBatch not called)");
        }
    }

    private void drop() {
        buffer.dropGradients();
        workspace.close();
        workspace = null;
        grads = null;
    }

    /**
     * The communication thread's part under overlap with 16-bit weights: adds {@code sum}, the fp32
     * sum over the group of buffer elements {@code [start, start + sum.size())} (all in this rank's
     * slice), into the shard.
     */
    void addReduced(NDArray sum, long start) {
        long from = start - shardStart();
        try (NDArray into = shard.get(new NDIndex("{}:{}", from, from + sum.getShape().get(0)))) {
            into.addi(sum);
        }
    }

    private long shardStart() {
        return group.rank() * shard.getShape().get(0);
    }

    /**
     * Completes over the tensor-parallel group {@code tp} the part of this rank's shard that holds
     * parameters flagged {@link org.djlmegatron.training.model.TrainableParameter#tpPartialGradient()}
     * (summed in place). Tensor-parallel peers share the data-parallel rank and the buffer layout,
     * so they hold the same ranges. Collective over {@code tp}.
     */
    public void completeTensorParallel(ProcessGroup tp) {
        if (tp.size() == 1) {
            return;
        }
        long lo = shardStart();
        long hi = lo + shard.getShape().get(0);
        for (TrainableParameter p : buffer.parameters()) {
            if (!p.tpPartialGradient()) {
                continue;
            }
            long[] range = buffer.rangeOf(List.of(p));
            long a = Math.max(lo, range[0]);
            long b = Math.min(hi, range[1]);
            if (a >= b) {
                continue;
            }
            try (NDArray part = shard.get(new NDIndex("{}:{}", a - lo, b - lo));
                    NDArray sum = tp.allReduce(part, ReduceOp.SUM)) {
                part.set(new NDIndex("..."), sum);
            }
        }
    }

    /**
     * The tied embedding under pipelining (Megatron's embedding group) on gradient shards, after
     * the step's last micro-batch: the first and the last stage place {@code p} at different
     * offsets of their buffers, so a rank's slice holds different parts of it on the two stages.
     * Each stage assembles {@code p}'s whole sum over the group from its ranks' slices (disjoint
     * pieces summed: exact), {@code acrossStages} turns it into the two stages' sum, and each rank
     * keeps its slice of that. Collective over the group, then over {@code acrossStages}'s group.
     */
    public void reduceAcrossStages(TrainableParameter p, UnaryOperator<NDArray> acrossStages) {
        long[] range = buffer.rangeOf(List.of(p));
        long lo = shardStart();
        long a = Math.max(lo, range[0]);
        long b = Math.min(lo + shard.getShape().get(0), range[1]);
        try (NDManager tmp = manager.newSubManager()) {
            NDArray whole = tmp.zeros(new Shape(range[1] - range[0]), DataType.FLOAT32);
            NDIndex mine = new NDIndex("{}:{}", a - range[0], b - range[0]);
            NDIndex inShard = new NDIndex("{}:{}", a - lo, b - lo);
            if (a < b) {
                try (NDArray slice = shard.get(inShard)) { // a view; closed here, not with the shard's manager
                    whole.set(mine, slice);
                }
            }
            NDArray summed = group.size() == 1 ? whole : group.allReduce(whole, ReduceOp.SUM);
            summed.attach(tmp);
            NDArray both = acrossStages.apply(summed);
            both.attach(tmp);
            if (a < b) {
                shard.set(inShard, both.get(mine));
            }
        }
    }

    /** The shard after the step's last micro-batch, divided by {@code divisor} in place: this rank's averaged main gradient. */
    public NDArray averaged(int divisor) {
        return shard.divi(divisor);
    }

    /** This rank's fp32 gradient shard (averaged once {@link #averaged} ran). */
    public NDArray values() {
        return shard;
    }

    /** Bytes of gradients kept between micro-batches: the fp32 shard. */
    public long bytes() {
        return shard.getShape().size() * 4;
    }

    @Override
    public void close() {
        if (workspace != null) {
            buffer.dropGradients();
        }
        manager.close();
    }
}
