package org.djlmegatron.engine;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;

/**
 * Floating-point casts inside the autograd graph. DJL's {@code toType} runs without grad, so a
 * cast of an activation would cut the graph; the project's native library has a differentiable
 * one. On DJL's stock engine activations are always fp32, so the only cast there is an fp16
 * weight widened to fp32, done by multiplying with a one-element fp32 tensor (type promotion keeps
 * the graph).
 */
public final class Cast {

    private Cast() {}

    /** {@code x} as {@code type}, differentiable; {@code x} itself when it already is. */
    public static NDArray to(NDArray x, DataType type) {
        DataType from = x.getDataType();
        if (from == type) {
            return x;
        }
        if (TorchNative.isAvailable()) {
            return TorchNative.cast(x, type);
        }
        if (type == DataType.FLOAT32 && from == DataType.FLOAT16) {
            NDManager m = x.getManager();
            try (NDArray one = m.ones(new Shape(1), DataType.FLOAT32)) {
                return x.mul(one);
            }
        }
        throw new IllegalStateException("a differentiable cast from " + from + " to " + type + " needs the "
                + "djl-megatron native library (DJL's stock cast runs without autograd); see docs/native.md");
    }
}
