package org.djlmegatron.moe;

import java.util.HashSet;
import java.util.Set;
import org.djlmegatron.autograd.RandomKey;

/**
 * One MoE layer's balance figures since the last {@link #reset}: rows routed to each expert (by
 * this rank's tokens), and the sums of the unscaled load-balancing and z losses with their count.
 * A forward replayed by activation recomputation (same randomness key) is not counted twice.
 */
public final class MoeStats {

    private final long[] tokensPerExpert;
    private final Set<RandomKey> seen = new HashSet<>();
    private final Set<RandomKey> lossSeen = new HashSet<>();
    private double auxSum;
    private double zSum;
    private int auxCount;
    private int zCount;
    private long dispatchNanos;
    private int overlapped;

    MoeStats(int numExperts) {
        tokensPerExpert = new long[numExperts];
    }

    /** Records one forward's routing, unless {@code key}'s forward was already recorded (a recompute). */
    void record(RandomKey key, long[] perExpert, double aux, double z) {
        if (key == null || seen.add(key)) {
            for (int e = 0; e < perExpert.length; e++) {
                tokensPerExpert[e] += perExpert[e];
            }
        }
        // the losses exist only in grad mode: under MoE recomputation, in the replay
        boolean losses = !Double.isNaN(aux) || !Double.isNaN(z);
        if (losses && key != null && !lossSeen.add(key)) {
            return;
        }
        if (!Double.isNaN(aux)) {
            auxSum += aux;
            auxCount++;
        }
        if (!Double.isNaN(z)) {
            zSum += z;
            zCount++;
        }
    }

    /** Time spent planning and running the expert-parallel exchange (forward and backward, replays included). */
    void addDispatchNanos(long nanos) {
        dispatchNanos += nanos;
    }

    /** A dispatch ran on the communication thread beside the shared experts. */
    void addOverlappedDispatch() {
        overlapped++;
    }

    /** Dispatches overlapped with the shared experts since the last reset ({@code --moe-shared-expert-overlap}). */
    public int overlappedDispatches() {
        return overlapped;
    }

    /** Seconds spent in the expert-parallel exchange since the last reset (0 at EP = 1). */
    public double dispatchSeconds() {
        return dispatchNanos / 1e9;
    }

    public long[] tokensPerExpert() {
        return tokensPerExpert.clone();
    }

    /** Mean load-balancing loss (without its coefficient) over the recorded forwards, NaN if none. */
    public double auxLoss() {
        return auxCount == 0 ? Double.NaN : auxSum / auxCount;
    }

    /** Mean z-loss (without its coefficient), NaN if none. */
    public double zLoss() {
        return zCount == 0 ? Double.NaN : zSum / zCount;
    }

    public void reset() {
        java.util.Arrays.fill(tokensPerExpert, 0);
        seen.clear();
        lossSeen.clear();
        auxSum = 0;
        zSum = 0;
        auxCount = 0;
        zCount = 0;
        dispatchNanos = 0;
        overlapped = 0;
    }
}
