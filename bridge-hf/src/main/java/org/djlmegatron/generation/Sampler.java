package org.djlmegatron.generation;

import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * Chooses the next token from a row of full-vocabulary logits, in double precision. Every rank
 * holds the same gathered logits and the same generator state, so every rank picks the same token.
 */
final class Sampler {

    private Sampler() {}

    /** Row {@code row} ({@code vocab} values at {@code row * vocab}) of {@code logits}. */
    static long choose(float[] logits, int row, int vocab, Sampling s, SplittableRandom rng) {
        int off = row * vocab;
        if (s.isGreedy()) {
            int best = 0;
            for (int i = 1; i < vocab; i++) {
                if (logits[off + i] > logits[off + best]) {
                    best = i;
                }
            }
            return best;
        }
        Integer[] order = new Integer[vocab];
        for (int i = 0; i < vocab; i++) {
            order[i] = i;
        }
        // most likely first, ties to the lower id: a fixed order for the cumulative walk
        Arrays.sort(order, (a, b) -> {
            int c = Float.compare(logits[off + b], logits[off + a]);
            return c != 0 ? c : Integer.compare(a, b);
        });
        int kept = s.topK() > 0 ? Math.min(s.topK(), vocab) : vocab;
        double max = logits[off + order[0]] / s.temperature();
        double[] p = new double[kept];
        double sum = 0;
        for (int i = 0; i < kept; i++) {
            p[i] = Math.exp(logits[off + order[i]] / s.temperature() - max);
            sum += p[i];
        }
        if (s.topP() < 1) {
            double cumulative = 0;
            int n = 0;
            while (n < kept && cumulative < s.topP() * sum) {
                cumulative += p[n++];
            }
            kept = Math.max(n, 1);
            sum = 0;
            for (int i = 0; i < kept; i++) {
                sum += p[i];
            }
        }
        double u = rng.nextDouble() * sum;
        for (int i = 0; i < kept; i++) {
            u -= p[i];
            if (u < 0) {
                return order[i];
            }
        }
        return order[kept - 1];
    }

    /** log softmax of row {@code row} at {@code id}. */
    static double logProb(float[] logits, int row, int vocab, long id) {
        int off = row * vocab;
        double max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < vocab; i++) {
            max = Math.max(max, logits[off + i]);
        }
        double sum = 0;
        for (int i = 0; i < vocab; i++) {
            sum += Math.exp(logits[off + i] - max);
        }
        return logits[off + (int) id] - max - Math.log(sum);
    }
}
