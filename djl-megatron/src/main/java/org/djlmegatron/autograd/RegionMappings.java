package org.djlmegatron.autograd;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.index.NDIndex;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;

/**
 * Megatron-Core's tensor-parallel region mappings for one group. Those whose backward is the
 * identity or a local slice need no cut (gradient flows through a zero-valued term or the
 * caller's own slice, whenever grad mode is on: DJL cannot tell whether a non-leaf tensor is in
 * the graph); the others are {@link Crossing}s to pass to {@link Tape#cut}.
 */
public final class RegionMappings {

    private final ProcessGroup group;

    public RegionMappings(ProcessGroup group) {
        this.group = group;
    }

    public ProcessGroup group() {
        return group;
    }

    /** Whether the mappings do anything (a group of one needs no communication). */
    public boolean isParallel() {
        return group.size() > 1;
    }

    /** f: identity forward, all-reduce (sum) of the gradient. */
    public Crossing copyToRegion() {
        return new Crossing() {
            @Override
            public NDArray forward(NDArray x) {
                return x;
            }

            @Override
            public NDArray adjoint(NDArray grad) {
                return group.allReduce(grad, ReduceOp.SUM);
            }
        };
    }

    /**
     * g: all-reduce (sum) forward, identity backward. Written as {@code S + (x - x)} with S and the
     * second x detached, so the value is exactly S on every rank and the gradient reaches x.
     */
    public NDArray reduceFromRegion(NDArray x) {
        if (!isParallel()) {
            return x;
        }
        NDArray sum = group.allReduce(x, ReduceOp.SUM);
        if (!Tape.isRecording()) {
            return sum;
        }
        return sum.add(x.sub(x.stopGradient()));
    }

    /**
     * All-gather along {@code axis}, backward: this rank's slice of the gradient. The other
     * ranks' pieces enter the concatenation detached, so autograd routes only our slice back.
     */
    public NDArray gatherFromRegion(NDArray x, int axis) {
        if (!isParallel()) {
            return x;
        }
        NDArray all = group.allGather(x.stopGradient(), axis);
        if (!Tape.isRecording()) {
            return all;
        }
        int a = axis < 0 ? axis + x.getShape().dimension() : axis;
        NDList pieces = all.split(group.size(), a);
        pieces.set(group.rank(), x);
        return NDArrays.concat(pieces, a);
    }

    /** Sequence parallel: all-gather along {@code axis}, backward reduce-scatter (sum). */
    public Crossing gatherFromSequenceRegion(int axis) {
        return new Crossing() {
            @Override
            public NDArray forward(NDArray x) {
                return group.allGather(x, axis);
            }

            @Override
            public NDArray adjoint(NDArray grad) {
                return group.reduceScatter(grad, axis, ReduceOp.SUM);
            }
        };
    }

    /** Sequence parallel: reduce-scatter (sum) along {@code axis}, backward all-gather. */
    public Crossing reduceScatterToSequenceRegion(int axis) {
        return new Crossing() {
            @Override
            public NDArray forward(NDArray x) {
                return group.reduceScatter(x, axis, ReduceOp.SUM);
            }

            @Override
            public NDArray adjoint(NDArray grad) {
                return group.allGather(grad, axis);
            }
        };
    }

    /** Keeps this rank's slice along {@code axis}; backward all-gather. */
    public Crossing scatterToRegion(int axis) {
        return new Crossing() {
            @Override
            public NDArray forward(NDArray x) {
                return localSlice(x, axis);
            }

            @Override
            public NDArray adjoint(NDArray grad) {
                return group.allGather(grad, axis);
            }
        };
    }

    /** This rank's equal slice of {@code x} along {@code axis}. */
    public NDArray localSlice(NDArray x, int axis) {
        long len = x.getShape().get(axis);
        if (len % group.size() != 0) {
            throw new IllegalArgumentException(
                    "dimension " + axis + " of length " + len + " is not divisible by the "
                            + group.size() + " ranks of " + group.name());
        }
        long chunk = len / group.size();
        long start = chunk * group.rank();
        StringBuilder spec = new StringBuilder();
        for (int d = 0; d < axis; d++) {
            spec.append(":,");
        }
        spec.append(start).append(':').append(start + chunk);
        return x.get(new NDIndex(spec.toString()));
    }
}
