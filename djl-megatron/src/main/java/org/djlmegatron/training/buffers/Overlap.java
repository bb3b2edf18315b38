package org.djlmegatron.training.buffers;

import java.time.Duration;
import org.djlmegatron.engine.TorchNative;

/**
 * Megatron's {@code --overlap-grad-reduce} and {@code --overlap-param-gather} for the step over
 * contiguous buffers.
 *
 * @param gradReduce start each gradient bucket's data-parallel reduction as soon as the last
 *     micro-batch's backward (under ZeRO-2 every micro-batch's) has finished its gradients
 *     ({@link BucketReducer})
 * @param paramGather under the distributed optimizer, all-gather the updated parameters bucket by
 *     bucket after the optimizer and wait for each in the next forward, before its first use
 *     ({@link ParamGatherer}); needs {@code gradReduce}, as in Megatron
 * @param timeout the collectives' timeout; a wait for asynchronous work gives up after twice it,
 *     so that the collective's own timeout, which names the group, rank and operation, fires first
 */
public record Overlap(boolean gradReduce, boolean paramGather, Duration timeout) {

    /** No overlap: every reduction and gather runs on the compute thread when the step needs it. */
    public static final Overlap OFF = new Overlap(false, false, Duration.ofMinutes(10));

    public Overlap {
        if (paramGather && !gradReduce) {
            throw new IllegalArgumentException("--overlap-param-gather needs --overlap-grad-reduce (Megatron's rule)");
        }
    }

    /**
     * Refuses, before any rank starts, {@code --overlap-grad-reduce} where the step will not use the
     * contiguous buffers the overlap works on (it is not emulated over the flat-vector step).
     */
    public void requireBuffers() {
        if (!gradReduce) {
            return;
        }
        String why = !Boolean.parseBoolean(System.getProperty("djlm.gradBuffers", "true")) ? "-Ddjlm.gradBuffers=false"
                : !TorchNative.isAvailable() ? "DJL's stock engine (the buffers need the project's native library, docs/native.md)"
                : null;
        if (why != null) {
            throw new IllegalArgumentException("--overlap-grad-reduce needs the contiguous gradient buffers, which the "
                    + "step does not use with " + why + "; leave --overlap-grad-reduce off");
        }
    }

    /** Whether anything is overlapped. */
    public boolean any() {
        return gradReduce || paramGather;
    }

    /** How long a wait for asynchronous work may take. */
    Duration waitLimit() {
        return timeout.multipliedBy(2);
    }
}
