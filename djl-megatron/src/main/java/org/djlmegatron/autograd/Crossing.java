package org.djlmegatron.autograd;

import ai.djl.ndarray.NDArray;

/**
 * How one tensor crosses a graph cut: the forward transform applied to its value, and the adjoint
 * applied to the gradient coming back. Megatron's region mappings are crossings whose forward
 * or adjoint is a collective.
 */
public interface Crossing {

    /** The tensor passes unchanged and so does its gradient (a residual stream, for instance). */
    Crossing IDENTITY =
            new Crossing() {
                @Override
                public NDArray forward(NDArray x) {
                    return x;
                }

                @Override
                public NDArray adjoint(NDArray grad) {
                    return grad;
                }
            };

    /** Forward value of the crossing, computed on a detached input. */
    NDArray forward(NDArray x);

    /** Gradient for the input, given the gradient of the output. */
    NDArray adjoint(NDArray grad);
}
