package org.djlmegatron.autograd;

/**
 * The counters that a training micro-batch's random masks are a function of: the iteration and the
 * global index of the micro-batch's first sample (its position in the iteration's global batch,
 * counted over every data-parallel rank). A layer adds the run's seed, its global layer number, the
 * site and each element's global coordinates, so a mask never depends on how the model is split
 * over ranks, on recomputation, or on any generator's state (a resumed run draws the same masks).
 */
public record RandomKey(long iteration, long firstSample) {

    /** The 64-bit stream id of sample {@code row} of this micro-batch at {@code layer} / {@code site}. */
    public long stream(long seed, long row, int layer, int site) {
        long h = Counters.mix(seed ^ 0x6A09E667F3BCC909L);
        h = Counters.mix(h ^ iteration);
        h = Counters.mix(h ^ (firstSample + row));
        return Counters.mix(h ^ ((long) layer << 8 | site));
    }
}
