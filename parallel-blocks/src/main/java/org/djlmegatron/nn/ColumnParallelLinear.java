package org.djlmegatron.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Parameter;
import org.djlmegatron.parallel.RankContext;

/**
 * Y = X A^T + b with A split by rows (output features) across the tensor-parallel group: each
 * rank holds {@code [out/tp, in]}. The input must be replicated in the group; the output is this
 * rank's slice of the features, or the whole output when {@code gatherOutput} is set.
 */
public final class ColumnParallelLinear extends ParallelBlock {

    private final Parameter weight;
    private final Parameter bias;
    private final boolean gatherOutput;
    private final boolean gated;

    private ColumnParallelLinear(Builder b) {
        super(b.ctx);
        int tpSize = tp.group().size();
        if (b.out % (b.gated ? 2L * tpSize : tpSize) != 0) {
            throw new IllegalArgumentException("output size " + b.out
                    + " is not divisible by the tensor-parallel size " + tpSize);
        }
        ShardLayout layout = b.gated ? ShardLayout.SPLIT_ROWS_GATED : ShardLayout.SPLIT_ROWS;
        weight = param("weight", new Shape(b.out, b.in), layout, false, ShardedParameter.Init.NORMAL);
        bias = b.bias ? param("bias", new Shape(b.out), layout, false, ShardedParameter.Init.ZEROS) : null;
        gatherOutput = b.gatherOutput;
        gated = b.gated;
    }

    /**
     * Standalone use: {@code x} is replicated and is the only live tensor, so this cuts the graph
     * itself (gradient all-reduced over the group), then applies {@link #applyInRegion}.
     */
    @Override
    public NDArray apply(NDArray x) {
        NDArray in = tp.isParallel() ? tape().cut(x, tp.copyToRegion()) : x;
        NDArray y = applyInRegion(in);
        if (!gatherOutput) {
            return y;
        }
        NDArray all = tp.gatherFromRegion(y, -1);
        return gated && tp.isParallel() ? gatesThenUps(all) : all;
    }

    /**
     * The gathered gated output is [gate_0; up_0; gate_1; up_1; ...] along the last axis;
     * reorders it to the full layer's [gate; up].
     */
    private NDArray gatesThenUps(NDArray gathered) {
        int size = tp.group().size();
        int last = gathered.getShape().dimension() - 1;
        NDList chunks = gathered.split(2L * size, last);
        NDList ordered = new NDList(2 * size);
        for (int half = 0; half < 2; half++) {
            for (int r = 0; r < size; r++) {
                ordered.add(chunks.get(2 * r + half));
            }
        }
        return NDArrays.concat(ordered, last);
    }

    /** The local matmul on an input already inside the tensor-parallel region. */
    public NDArray applyInRegion(NDArray x) {
        NDArray b = bias == null ? null : value(bias, x);
        return x.getNDArrayInternal().linear(x, value(weight, x), b).singletonOrThrow();
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
        private boolean gatherOutput;
        private boolean gated;

        private Builder(RankContext ctx) {
            this.ctx = ctx;
        }

        public Builder setInFeatures(long in) {
            this.in = in;
            return this;
        }

        /** Total output features over all ranks. */
        public Builder setOutFeatures(long out) {
            this.out = out;
            return this;
        }

        public Builder optBias(boolean bias) {
            this.bias = bias;
            return this;
        }

        public Builder optGatherOutput(boolean gatherOutput) {
            this.gatherOutput = gatherOutput;
            return this;
        }

        /** The output is [gate; up], each half split across ranks (gated MLPs). */
        public Builder optGated(boolean gated) {
            this.gated = gated;
            return this;
        }

        public ColumnParallelLinear build() {
            return new ColumnParallelLinear(this);
        }
    }

    /** This rank's weight shard as an activation of {@code like}'s type computes with it (grouped expert GEMMs). */
    public NDArray weightFor(NDArray like) {
        return value(weight, like);
    }
}
