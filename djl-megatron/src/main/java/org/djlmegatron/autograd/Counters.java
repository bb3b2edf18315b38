package org.djlmegatron.autograd;

/**
 * Counter-based random numbers: a uniform value is a pure function of a stream id and an element
 * index (SplitMix64's finaliser over their combination), so any rank can draw any element without
 * drawing the ones before it and without shared generator state.
 */
public final class Counters {

    private Counters() {}

    /** SplitMix64's finaliser: a bijection of 64-bit values with full avalanche. */
    public static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** A uniform value in [0, 1) with 24 random bits (exactly representable as a float). */
    public static float uniform(long stream, long index) {
        long z = mix(stream + index * 0x9E3779B97F4A7C15L);
        return (z >>> 40) * 0x1.0p-24f;
    }
}
