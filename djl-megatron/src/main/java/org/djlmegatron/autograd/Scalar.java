package org.djlmegatron.autograd;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;

/**
 * 0-d float32 tensors for arithmetic inside the autograd graph.
 *
 * <p>Never use DJL's {@code mul(Number)}, {@code div(Number)} or {@code pow(Number)} on a tensor
 * that is being recorded: DJL wraps the number in a tensor over a Java direct buffer and closes
 * it right after the op, but libtorch's backward keeps that tensor and reads it later, when the
 * buffer may already be freed: gradients then come out as garbage, Inf or NaN, at random.
 * A scalar from here owns libtorch memory and can be kept (blocks cache theirs).
 */
public final class Scalar {

    private Scalar() {}

    /** A libtorch-owned 0-d float32 tensor with value {@code v}, attached to {@code m}. */
    public static NDArray of(NDManager m, double v) {
        try (NDArray javaBacked = m.create((float) v)) {
            return javaBacked.duplicate();
        }
    }
}
