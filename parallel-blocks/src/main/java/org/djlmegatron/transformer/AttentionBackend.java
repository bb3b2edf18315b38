package org.djlmegatron.transformer;

import org.djlmegatron.engine.TorchNative;

/**
 * How attention is computed (Megatron's {@code --attention-backend}, in the subset that exists
 * here): libtorch's scaled-dot-product attention through the project's native library (flash or
 * memory-efficient kernels where libtorch has them), or composed from DJL ops.
 */
public enum AttentionBackend {
    /** {@link #FUSED} when the native library is loaded, else {@link #UNFUSED}. */
    AUTO,
    /** libtorch's scaled-dot-product attention (needs the native library). */
    FUSED,
    /** matmul, additive causal mask, fp32 softmax, matmul: DJL ops only. */
    UNFUSED;

    /** The backend that runs: AUTO resolved, FUSED refused without the native library. */
    public AttentionBackend resolve() {
        if (this == AUTO) {
            return TorchNative.isAvailable() ? FUSED : UNFUSED;
        }
        if (this == FUSED && !TorchNative.isAvailable()) {
            throw new IllegalStateException("--attention-backend fused needs the djl-megatron native library "
                    + "(DJL runs on its stock JNI); use auto or unfused, or see docs/native.md");
        }
        return this;
    }
}
