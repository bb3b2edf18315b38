package org.djlmegatron.training.buffers;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import java.util.List;
import java.util.function.Predicate;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.training.model.TrainableParameter;

/**
 * Under expert parallelism, a rank's parameters in two {@link ParamAndGradBuffer}s, one per
 * reduction group as in Megatron: the dense parameters' (averaged over data x context
 * parallelism, sharded over it by the distributed optimizer) and the expert parameters' (summed
 * over the expert-data-parallel group, the ranks holding the same experts, and divided by the
 * whole data-parallel size: the mean over all the batch's tokens; sharded over the expert-data
 * group). Parameters and gradients are views of the buffers, so backward accumulates in place
 * and the reductions run bucket by bucket over whole buffers.
 *
 * <p>The optimizer sees one fp32 range, this rank's dense shard followed by its expert shard:
 * the order of the flat-vector step, so the optimizer state (and checkpoints) are the same under
 * both. fp32 weights are their own masters: the range is the two weight shards themselves
 * ({@link #weightShards}), updated where they are; 16-bit weights keep an fp32 copy
 * ({@link #masters}), split back into both buffers after the update. Joining the two reduced
 * gradient shards is one copy per step, not one per parameter.
 *
 * <p>16-bit weights: each micro-batch's gradients go into the fp32 main gradients (or ZeRO-2's
 * shards), and the partial (sequence-parallel) gradients are completed over tensor parallelism
 * once per step there, after the data-parallel reduction ({@link #completeTensorParallel}).
 *
 * <p>Under ZeRO-2 ({@code shardGradients}) neither buffer keeps gradients between micro-batches:
 * each has a {@link GradientShard} over its own group, into which every micro-batch's gradients
 * are reduce-scattered (the dense shard first, then the expert shard, on every rank).
 */
public final class ExpertBuffers implements AutoCloseable {

    private final ParamAndGradBuffer dense;
    private final ParamAndGradBuffer experts;
    private final ProcessGroup dp;
    private final ProcessGroup expertDp;
    private final boolean sharded;
    /** ZeRO-2: the dense and the expert fp32 gradient shards; null otherwise. */
    private final GradientShard denseShard;
    private final GradientShard expertShard;

    /** Whether {@code params} can be split into two buffers here (both parts non-empty, see {@link ParamAndGradBuffer#supports}). */
    public static boolean supports(List<TrainableParameter> params) {
        List<TrainableParameter> d = params.stream().filter(p -> !p.expert()).toList();
        List<TrainableParameter> e = params.stream().filter(TrainableParameter::expert).toList();
        return ParamAndGradBuffer.supports(d) && ParamAndGradBuffer.supports(e)
                && d.get(0).array().getDataType() == e.get(0).array().getDataType();
    }

    /**
     * Moves the parameters into the two buffers.
     *
     * @param dp the dense parameters' reduction group (data x context parallel)
     * @param expertDp the expert parameters' reduction group (expert-data parallel)
     * @param sharded whether the distributed optimizer shards both over their groups
     * @param shardGradients ZeRO-2: only this rank's fp32 gradient shards are kept (implies {@code sharded})
     */
    public ExpertBuffers(List<TrainableParameter> params, ProcessGroup dp, ProcessGroup expertDp, long bucketElements,
            boolean sharded, boolean shardGradients, NDManager parent) {
        if (shardGradients && !sharded) {
            throw new IllegalArgumentException("gradient shards (ZeRO-2) need the distributed optimizer's shards");
        }
        this.dp = dp;
        this.expertDp = expertDp;
        this.sharded = sharded;
        dense = new ParamAndGradBuffer(params.stream().filter(p -> !p.expert()).toList(), dp.size(), bucketElements,
                parent, !shardGradients);
        experts = new ParamAndGradBuffer(params.stream().filter(TrainableParameter::expert).toList(), expertDp.size(),
                bucketElements, parent, !shardGradients);
        denseShard = shardGradients ? new GradientShard(dense, dp, parent) : null;
        expertShard = shardGradients ? new GradientShard(experts, expertDp, parent) : null;
    }

    /** Whether only this rank's gradient shards are kept between micro-batches (ZeRO-2). */
    public boolean shardsGradients() {
        return denseShard != null;
    }

    /** ZeRO-2: the dense buffer's gradient shard (over data x context parallelism); null otherwise. */
    public GradientShard denseShard() {
        return denseShard;
    }

    /** ZeRO-2: the expert buffer's gradient shard (over the expert-data group); null otherwise. */
    public GradientShard expertShard() {
        return expertShard;
    }

    public ParamAndGradBuffer dense() {
        return dense;
    }

    public ParamAndGradBuffer experts() {
        return experts;
    }

    /** Elements of this rank's dense shard (all of the dense buffer when not sharded). */
    public long denseShardLength() {
        return sharded ? dense.paddedSize() / dp.size() : dense.paddedSize();
    }

    /** Elements of this rank's expert shard. */
    public long expertShardLength() {
        return sharded ? experts.paddedSize() / expertDp.size() : experts.paddedSize();
    }

    public boolean weightsAreFp32() {
        return dense.weightsAreFp32();
    }

    public void zeroGradients() {
        if (shardsGradients()) {
            denseShard.zero();
            expertShard.zero();
            return;
        }
        dense.zeroGradients();
        experts.zeroGradients();
    }

    /** ZeRO-2: binds the gradients to a workspace for one micro-batch's backward; nothing otherwise. */
    public void beginMicroBatch() {
        if (shardsGradients()) {
            denseShard.beginMicroBatch();
            expertShard.beginMicroBatch();
        }
    }

    /**
     * After a micro-batch's backward: ZeRO-2 reduce-scatters its gradients into the shards
     * (collective over both groups); 16-bit weights add them into the fp32 main gradients (see
     * {@link ParamAndGradBuffer#accumulateIntoMain}).
     */
    public void accumulateIntoMain() {
        if (shardsGradients()) {
            denseShard.endMicroBatch();
            expertShard.endMicroBatch();
            return;
        }
        dense.accumulateIntoMain();
        experts.accumulateIntoMain();
    }

    /**
     * {@link #accumulateIntoMain()} over the range each buffer gives {@code chunk}'s parameters
     * only (under pipelining with overlap: another chunk's buckets may be in flight meanwhile).
     */
    public void accumulateIntoMain(List<TrainableParameter> chunk) {
        for (ParamAndGradBuffer b : List.of(dense, experts)) {
            long[] range = b.rangeOf(chunk);
            b.accumulateIntoMain(range[0], range[1]);
        }
    }

    /** ZeRO-2 after an overlapped micro-batch: see {@link GradientShard#endOverlappedMicroBatch}. Not collective. */
    public void endOverlappedMicroBatch() {
        denseShard.endOverlappedMicroBatch();
        expertShard.endOverlappedMicroBatch();
    }

    /**
     * fp32 weights are their own masters: this rank's shard of the dense weights and of the expert
     * weights (views of the buffers, attached to {@code m}; the buffers themselves when not sharded),
     * which the optimizer updates in place as one range, dense first.
     */
    public List<NDArray> weightShards(NDManager m) {
        if (!weightsAreFp32()) {
            throw new IllegalStateException("16-bit weights keep fp32 masters of their own (masters)");
        }
        NDArray d = shard(dense.params(), dense, dp, m);
        NDArray e = shard(experts.params(), experts, expertDp, m);
        return List.of(d, e);
    }

    /** The fp32 masters of 16-bit weights: this rank's shards of both buffers' weights, dense first (a new array). */
    public NDArray masters(NDManager m) {
        try (NDManager tmp = m.newSubManager()) {
            NDArray d = shard(dense.params(), dense, dp, tmp).toType(DataType.FLOAT32, true);
            NDArray e = shard(experts.params(), experts, expertDp, tmp).toType(DataType.FLOAT32, true);
            d.attach(tmp);
            e.attach(tmp);
            NDArray joined = NDArrays.concat(new NDList(d, e));
            joined.attach(m);
            return joined;
        }
    }

    /** A 1/0 fp32 vector over this rank's shards: {@code denseWhich} on the dense part, {@code expertWhich} on the experts'. */
    public NDArray mask(NDManager m, Predicate<TrainableParameter> denseWhich, Predicate<TrainableParameter> expertWhich) {
        try (NDManager tmp = m.newSubManager()) {
            return joinShards(dense.mask(tmp, denseWhich), experts.mask(tmp, expertWhich), m);
        }
    }

    /**
     * The step's data-parallel reduction, in place: the dense main gradients averaged over
     * {@code dp} (bucketed all-reduce, or this rank's reduce-scattered slice) and the expert main
     * gradients summed over the expert-data group (or this rank's slice) and divided by
     * {@code dp}'s size; with {@code overlapped} the buckets did that already. Under ZeRO-2 the
     * shards, summed micro-batch by micro-batch, are divided by {@code dp}'s size. Collective over
     * both groups unless overlapped or ZeRO-2.
     */
    public void reduceGradients(boolean overlapped) {
        int divisor = dp.size();
        if (shardsGradients()) {
            denseShard.averaged(divisor);
            expertShard.averaged(divisor);
        } else if (!overlapped) {
            reduce(dense, dp, divisor);
            reduce(experts, expertDp, divisor);
        }
    }

    /**
     * After {@link #reduceGradients}, for 16-bit weights: the partial gradients completed over
     * the tensor-parallel group {@code tp} on the fp32 main gradients (or ZeRO-2's shards), once
     * per step (Megatron's order, DP then TP; see {@link ParamAndGradBuffer#completeTensorParallel}).
     */
    public void completeTensorParallel(ProcessGroup tp) {
        if (shardsGradients()) {
            denseShard.completeTensorParallel(tp);
            expertShard.completeTensorParallel(tp);
        } else {
            dense.completeTensorParallel(tp);
            experts.completeTensorParallel(tp);
        }
    }

    /**
     * The reduced gradients as the optimizer sees them (after {@link #reduceGradients}): this
     * rank's dense shard followed by its expert shard, in a new array of {@code m} (no collective).
     */
    public NDArray joinReducedGradients(NDManager m) {
        if (shardsGradients()) {
            NDArray joined = NDArrays.concat(new NDList(denseShard.values(), expertShard.values()));
            joined.attach(m);
            return joined;
        }
        return joinShards(dense.mainGrads(), experts.mainGrads(), m);
    }

    /** This rank's shards of a dense-length and an expert-length vector, dense first, in a new array of {@code m}. */
    private NDArray joinShards(NDArray denseFull, NDArray expertFull, NDManager m) {
        try (NDManager tmp = m.newSubManager()) {
            NDArray joined = NDArrays.concat(new NDList(shard(denseFull, dense, dp, tmp),
                    shard(expertFull, experts, expertDp, tmp)));
            joined.attach(m);
            return joined;
        }
    }

    /** Reduces {@code b}'s main gradients over {@code group} in place (under sharding into this rank's slice only). */
    private void reduce(ParamAndGradBuffer b, ProcessGroup group, int divisor) {
        if (group.size() > 1 && sharded) {
            long len = b.paddedSize() / group.size();
            try (NDArray part = b.reduceScatter(group, divisor);
                    NDArray mine = b.mainGrads().get(new NDIndex("{}:{}", len * group.rank(), len * (group.rank() + 1)))) {
                mine.set(new NDIndex("..."), part); // in the main gradient, where the TP completion finds it
            }
        } else if (group.size() > 1) {
            b.allReduce(group, divisor);
        } else {
            b.mainGrads().divi(divisor); // in place, as the all-reduce: zeroed before the next step
        }
    }

    /** Copies the updated masters into both buffers' weights (all-gathered over each group when sharded). Collective. */
    public void writeBack(NDArray masters) {
        long split = denseShardLength();
        try (NDArray d = masters.get(new NDIndex("0:{}", split)); NDArray e = masters.get(new NDIndex("{}:", split))) {
            writeBack(List.of(d, e));
        }
    }

    /**
     * {@link #writeBack(NDArray)} from the dense and the expert part of the masters (for fp32 weights
     * the {@link #weightShards}, which are the weights: unsharded, nothing is copied). Collective.
     */
    public void writeBack(List<NDArray> parts) {
        setParams(dense, dp, parts.get(0));
        setParams(experts, expertDp, parts.get(1));
    }

    private void setParams(ParamAndGradBuffer b, ProcessGroup group, NDArray shard) {
        if (sharded && group.size() > 1) {
            try (NDArray full = group.allGather(shard, 0)) {
                b.setParams(full);
            }
        } else {
            b.setParams(shard);
        }
    }

    /** This rank's shard of a full-length vector of {@code b} (a view; all of it when not sharded). */
    private NDArray shard(NDArray full, ParamAndGradBuffer b, ProcessGroup group, NDManager tmp) {
        if (!sharded || group.size() == 1) {
            return full;
        }
        long len = b.paddedSize() / group.size();
        NDArray piece = full.get(new NDIndex("{}:{}", len * group.rank(), len * (group.rank() + 1)));
        piece.attach(tmp);
        return piece;
    }

    /** Bytes of the weights (both parameter buffers). */
    public long parameterBytes() {
        return dense.parameterBytes() + experts.parameterBytes();
    }

    /** Bytes of gradients kept between micro-batches (both gradient buffers). */
    public long gradientBytes() {
        if (shardsGradients()) {
            return denseShard.bytes() + expertShard.bytes();
        }
        return dense.gradientBytes() + experts.gradientBytes();
    }

    @Override
    public void close() {
        if (shardsGradients()) {
            denseShard.close();
            expertShard.close();
        }
        dense.close();
        experts.close();
    }
}
