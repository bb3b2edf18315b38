package org.djlmegatron.data;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.regex.Pattern;

/**
 * Megatron's {@code --data-path}: dataset prefixes, optionally each preceded by a weight
 * ({@code 0.3 A 0.7 B}); {@code get_blend_from_list} in Megatron-LM's {@code datasets/utils.py}.
 *
 * @param prefixes dataset prefixes (without {@code .bin}/{@code .idx})
 * @param weights one weight per prefix, normalised to sum to 1, or null when none were given
 */
public record DataBlend(List<Path> prefixes, double[] weights) {

    private static final Pattern DECIMAL = Pattern.compile("[+-]?(\\d+\\.?\\d*|\\.\\d+)([eE][+-]?\\d+)?");

    public DataBlend {
        prefixes = List.copyOf(prefixes);
        if (prefixes.isEmpty()) {
            throw new IllegalArgumentException("--data-path needs at least one dataset prefix");
        }
        if (weights != null && weights.length != prefixes.size()) {
            throw new IllegalArgumentException(weights.length + " weights for " + prefixes.size() + " prefixes");
        }
    }

    /**
     * Parses the {@code --data-path} words: an odd count, or any word in a weight position that
     * is not a number, means plain prefixes; otherwise (weight, prefix) pairs.
     *
     * @throws IllegalArgumentException for a negative weight, weights summing to 0, or pairs
     *     where only some weights are numbers
     */
    public static DataBlend parse(List<String> words) {
        if (words.isEmpty()) {
            throw new IllegalArgumentException("--data-path needs at least one dataset prefix");
        }
        if (words.size() % 2 == 1) {
            return new DataBlend(words.stream().map(w -> Path.of(w.strip())).toList(), null);
        }
        double[] weights = new double[words.size() / 2];
        List<Path> prefixes = new ArrayList<>();
        int numbers = 0;
        for (int i = 0; i < weights.length; i++) {
            String word = words.get(2 * i).strip();
            if (DECIMAL.matcher(word).matches()) {
                weights[i] = Double.parseDouble(word);
                numbers++;
            }
            prefixes.add(Path.of(words.get(2 * i + 1).strip()));
        }
        if (numbers == 0) {
            return new DataBlend(words.stream().map(w -> Path.of(w.strip())).toList(), null);
        }
        if (numbers < weights.length) {
            throw new IllegalArgumentException("--data-path mixes weights and prefixes: " + String.join(" ", words)
                    + "; give 'WEIGHT PREFIX' pairs or only prefixes");
        }
        for (double w : weights) {
            if (!(w >= 0) || Double.isInfinite(w)) {
                throw new IllegalArgumentException("--data-path weight " + w + " must be a finite number >= 0");
            }
        }
        return new DataBlend(prefixes, normalize(weights));
    }

    /**
     * Megatron's {@code normalize}: divide by numpy's sum, which adds pairwise (8 accumulators in
     * blocks of up to 128), so results match numpy bit for bit.
     */
    public static double[] normalize(double[] weights) {
        double sum = numpySum(weights, 0, weights.length);
        if (!(sum > 0)) {
            throw new IllegalArgumentException("weights " + Arrays.toString(weights) + " sum to " + sum);
        }
        double[] out = new double[weights.length];
        for (int i = 0; i < weights.length; i++) {
            out[i] = weights[i] / sum;
        }
        return out;
    }

    /** numpy's {@code pairwise_sum} for float64. */
    static double numpySum(double[] a, int from, int n) {
        if (n < 8) {
            double res = 0.0;
            for (int i = 0; i < n; i++) {
                res += a[from + i];
            }
            return res;
        }
        if (n <= 128) {
            double[] r = Arrays.copyOfRange(a, from, from + 8);
            int i = 8;
            for (; i < n - n % 8; i += 8) {
                for (int j = 0; j < 8; j++) {
                    r[j] += a[from + i + j];
                }
            }
            double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
            for (; i < n; i++) {
                res += a[from + i];
            }
            return res;
        }
        int n2 = n / 2;
        n2 -= n2 % 8;
        return numpySum(a, from, n2) + numpySum(a, from + n2, n - n2);
    }
}
