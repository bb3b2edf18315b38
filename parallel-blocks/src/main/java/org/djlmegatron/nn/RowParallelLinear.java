package org.djlmegatron.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Parameter;
import org.djlmegatron.parallel.RankContext;

/**
 * Y = X A^T + b with A split by columns (input features): each rank holds {@code [out, in/tp]}
 * and produces a partial sum that the group reduces. The bias is added once, after the reduction.
 */
public final class RowParallelLinear extends ParallelBlock {

    private final Parameter weight;
    private final Parameter bias;
    private final boolean inputIsParallel;

    private RowParallelLinear(Builder b) {
        super(b.ctx);
        int tpSize = tp.group().size();
        if (b.in % tpSize != 0) {
            throw new IllegalArgumentException("input size " + b.in
                    + " is not divisible by the tensor-parallel size " + tpSize);
        }
        weight = param("weight", new Shape(b.out, b.in), ShardLayout.SPLIT_COLUMNS, false,
                ShardedParameter.Init.NORMAL);
        bias = b.bias ? param("bias", new Shape(b.out), ShardLayout.REPLICATED,
                b.sequenceParallel, ShardedParameter.Init.ZEROS) : null;
        inputIsParallel = b.inputIsParallel;
    }

    /** Standalone use: splits a replicated input if needed, reduces the partial sums, adds the bias. */
    @Override
    public NDArray apply(NDArray x) {
        NDArray in = x;
        if (!inputIsParallel && tp.isParallel()) {
            in = tape().cut(x, tp.scatterToRegion(x.getShape().dimension() - 1));
        }
        return addBias(tp.reduceFromRegion(partial(in)));
    }

    /** This rank's partial product (no bias, no reduction). */
    public NDArray partial(NDArray x) {
        return x.getNDArrayInternal().linear(x, value(weight, x), null).singletonOrThrow();
    }

    /** Adds the bias to an already reduced output. */
    public NDArray addBias(NDArray y) {
        return bias == null ? y : y.add(value(bias, y));
    }

    public static Builder builder(RankContext ctx) {
        return new Builder(ctx);
    }

    /** Builder in DJL's style. */
    public static final class Builder {
        private final RankContext ctx;
        private long in;
        private long out;
        private boolean bias = true;
        private boolean inputIsParallel = true;
        private boolean sequenceParallel;

        private Builder(RankContext ctx) {
            this.ctx = ctx;
        }

        /** Total input features over all ranks. */
        public Builder setInFeatures(long in) {
            this.in = in;
            return this;
        }

        public Builder setOutFeatures(long out) {
            this.out = out;
            return this;
        }

        public Builder optBias(boolean bias) {
            this.bias = bias;
            return this;
        }

        /** Whether the input is already split along its last axis (default true). */
        public Builder optInputIsParallel(boolean inputIsParallel) {
            this.inputIsParallel = inputIsParallel;
            return this;
        }

        /** The output is reduce-scattered along the sequence, so the bias sees a partial sequence. */
        public Builder optSequenceParallel(boolean sequenceParallel) {
            this.sequenceParallel = sequenceParallel;
            return this;
        }

        public RowParallelLinear build() {
            return new RowParallelLinear(this);
        }
    }

    /** This rank's weight shard as an activation of {@code like}'s type computes with it (grouped expert GEMMs). */
    public NDArray weightFor(NDArray like) {
        return value(weight, like);
    }
}
