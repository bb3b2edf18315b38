package org.djlmegatron.optim;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.index.NDIndex;
import java.util.List;
import java.util.Map;

/**
 * An optimizer over one flat fp32 range of master weights (all of a rank's parameters, or its
 * data-parallel shard of them under the distributed optimizer). State arrays are created lazily
 * in the masters' manager and have the masters' length.
 */
public interface FlatOptimizer {

    /**
     * One update, in place.
     *
     * @param masters fp32 master weights
     * @param grads fp32 gradients, same length, already averaged, unscaled and clipped
     * @param decayMask 1 where weight decay applies, 0 elsewhere
     * @param lr learning rate of this step
     * @param step 1-based update count (Adam's bias correction)
     */
    void step(NDArray masters, NDArray grads, NDArray decayMask, double lr, long step);

    /**
     * One update with the gradients first multiplied by {@code gradScale} (the clipping
     * coefficient; 1 for none), which an optimizer may fold into its own pass; by default a
     * multiplication of {@code grads} in place, then {@link #step}.
     */
    default void step(NDArray masters, NDArray grads, NDArray decayMask, double gradScale, double lr, long step) {
        if (gradScale != 1.0) {
            grads.muli((float) gradScale);
        }
        step(masters, grads, decayMask, lr, step);
    }

    /**
     * {@link #step(NDArray, NDArray, NDArray, double, double, long)} over masters held in
     * {@code parts} (views of different buffers: under expert parallelism fp32 weights are their
     * own masters, the dense shard and the expert shard), whose concatenation is the optimizer's
     * flat range; {@code grads}, {@code decayMask} and the state span all of it. By default the
     * parts are joined for the update and copied back (the same arithmetic); an optimizer may
     * update them where they are.
     */
    default void step(List<NDArray> parts, NDArray grads, NDArray decayMask, double gradScale, double lr, long step) {
        if (parts.size() == 1) {
            step(parts.get(0), grads, decayMask, gradScale, lr, step);
            return;
        }
        try (NDArray joined = NDArrays.concat(new NDList(parts))) {
            step(joined, grads, decayMask, gradScale, lr, step);
            splitInto(joined, parts);
        }
    }

    /** Copies {@code joined}, the parts laid end to end, back into {@code parts}. */
    static void splitInto(NDArray joined, List<NDArray> parts) {
        long at = 0;
        for (NDArray p : parts) {
            long n = p.getShape().size();
            try (NDArray piece = joined.get(new NDIndex("{}:{}", at, at + n))) {
                p.set(new NDIndex("..."), piece);
            }
            at += n;
        }
    }

    /** State tensors by name (for checkpoints); empty before the first step. */
    Map<String, NDArray> state();

    /** Restores state saved by {@link #state()}. */
    void loadState(Map<String, NDArray> state);

    /** Bytes of optimizer state held (excluding the masters). */
    long stateBytes();
}
