package org.djlmegatron.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import org.djlmegatron.autograd.Counters;
import org.djlmegatron.autograd.RandomKey;

/**
 * Dropout whose mask is a function of (seed, iteration, global sample, global layer, site, global
 * coordinates), not of a generator's stream: every rank computes exactly the mask elements of the
 * part of the tensor it holds, so TP, SP, DP, recomputation and resume all apply the same masks.
 * Kept elements are scaled by 1/(1-p) (inverted dropout, as torch and Megatron do); the mask holds
 * 0 or 1/(1-p) and multiplies the input once.
 *
 * <p>Masks are drawn on the host (24 random bits per element, {@link Counters}) and are the same on
 * every engine. Off when {@code p == 0} or when the tape has no {@link RandomKey} (evaluation,
 * inference, {@code logits}).
 */
public final class PositionalDropout {

    /** Where in the model a mask applies; part of the mask's stream id. */
    public enum Site {
        EMBEDDING,
        ATTENTION_PROBS,
        ATTENTION_OUTPUT,
        MLP_OUTPUT
    }

    private final double p;
    private final long seed;
    private final float keepScale;

    public PositionalDropout(double p, long seed) {
        if (!(p >= 0 && p < 1)) {
            throw new IllegalArgumentException("dropout probability must be in [0, 1), found " + p);
        }
        this.p = p;
        this.seed = seed;
        this.keepScale = (float) (1.0 / (1.0 - p));
    }

    public double probability() {
        return p;
    }

    /** Whether a mask applies under {@code key}. */
    public boolean active(RandomKey key) {
        return p > 0 && key != null;
    }

    /**
     * Hidden states {@code [b, s, h]} holding global positions {@code firstPosition ..} of each
     * sample: element (row, position, j) has index {@code position * h + j} in its sample's stream.
     */
    public NDArray hidden(NDArray x, RandomKey key, int layer, Site site, long firstPosition) {
        if (!active(key)) {
            return x;
        }
        long[] positions = new long[(int) x.getShape().get(1)];
        for (int t = 0; t < positions.length; t++) {
            positions[t] = firstPosition + t;
        }
        return hidden(x, key, layer, site, positions);
    }

    /**
     * Hidden states {@code [b, s, h]} whose token t sits at global sequence index
     * {@code positions[t]} (context parallelism holds two non-adjacent chunks): element
     * (row, t, j) has index {@code positions[t] * h + j} in its sample's stream.
     */
    public NDArray hidden(NDArray x, RandomKey key, int layer, Site site, long[] positions) {
        if (!active(key)) {
            return x;
        }
        Shape s = x.getShape();
        int rows = (int) s.get(0);
        int seq = (int) s.get(1);
        int width = (int) s.get(2);
        float[] mask = new float[Math.multiplyExact(Math.multiplyExact(rows, seq), width)];
        int k = 0;
        for (int r = 0; r < rows; r++) {
            long stream = key.stream(seed, r, layer, site.ordinal());
            for (int t = 0; t < seq; t++) {
                long base = positions[t] * width;
                for (int j = 0; j < width; j++) {
                    mask[k++] = keep(stream, base + j);
                }
            }
        }
        return x.mul(upload(x, mask, s));
    }

    /**
     * Attention probabilities {@code [b, g, qpg, sq, sk]} for global query heads
     * {@code firstHead + g * qpg + i}: element (row, head, q, k) has index {@code (head * sq + q) * sk + k}.
     */
    public NDArray probabilities(NDArray probs, RandomKey key, int layer, long firstHead) {
        if (!active(key)) {
            return probs;
        }
        Shape s = probs.getShape();
        return probabilities(probs, key, layer, firstHead, range(s.get(3)), range(s.get(4)), s.get(4));
    }

    /**
     * Attention probabilities {@code [b, g, qpg, sq, sk]} (or unnormalised weights) of queries at
     * global sequence indices {@code queries} over keys at {@code keys}, in a sequence of
     * {@code total} tokens (context parallelism: a block of the whole [total, total] matrix):
     * element (row, head, q, k) has index {@code (head * total + queries[q]) * total + keys[k]}, so
     * every layout draws the one-rank mask's elements.
     */
    public NDArray probabilities(NDArray probs, RandomKey key, int layer, long firstHead, long[] queries, long[] keys,
            long total) {
        if (!active(key)) {
            return probs;
        }
        Shape s = probs.getShape();
        int rows = (int) s.get(0);
        int heads = (int) (s.get(1) * s.get(2));
        float[] mask = new float[Math.toIntExact(rows * heads * (long) queries.length * keys.length)];
        int k = 0;
        for (int r = 0; r < rows; r++) {
            long stream = key.stream(seed, r, layer, Site.ATTENTION_PROBS.ordinal());
            for (int h = 0; h < heads; h++) {
                long head = firstHead + h;
                for (long q : queries) {
                    long base = (head * total + q) * total;
                    for (long c : keys) {
                        mask[k++] = keep(stream, base + c);
                    }
                }
            }
        }
        return probs.mul(upload(probs, mask, s));
    }

    private static long[] range(long n) {
        long[] out = new long[(int) n];
        for (int i = 0; i < n; i++) {
            out[i] = i;
        }
        return out;
    }

    private float keep(long stream, long index) {
        return Counters.uniform(stream, index) >= p ? keepScale : 0f;
    }

    /** The mask as a libtorch-owned tensor in x's dtype (a Java-backed one could be freed under autograd). */
    private static NDArray upload(NDArray x, float[] mask, Shape shape) {
        NDManager m = x.getManager();
        try (NDArray javaBacked = m.create(mask, shape)) {
            NDArray owned = javaBacked.duplicate(); // a libtorch copy: toType to the same dtype would alias
            if (owned.getDataType() == x.getDataType()) {
                return owned;
            }
            try (owned) {
                return owned.toType(x.getDataType(), true);
            }
        }
    }
}
