package org.djlmegatron.generation;

/**
 * How the next token is chosen: greedy (the most likely; ties to the lowest id), or sampled from
 * the softmax of {@code logits / temperature}, restricted to the {@code topK} most likely tokens
 * ({@code 0}: all) and then to the smallest set whose probability reaches {@code topP}
 * ({@code 1}: all).
 */
public record Sampling(boolean greedy, double temperature, int topK, double topP) {

    public static final Sampling GREEDY = new Sampling(true, 1.0, 0, 1.0);

    public Sampling {
        if (!(temperature > 0) || Double.isInfinite(temperature)) {
            throw new InvalidRequestException("temperature must be a positive number, found " + temperature);
        }
        if (topK < 0) {
            throw new InvalidRequestException("top_k must be >= 0 (0: no limit), found " + topK);
        }
        if (!(topP > 0 && topP <= 1)) {
            throw new InvalidRequestException("top_p must be in (0, 1], found " + topP);
        }
    }

    /** Sampling from {@code temperature}, {@code topK} and {@code topP}. */
    public static Sampling sample(double temperature, int topK, double topP) {
        return new Sampling(false, temperature, topK, topP);
    }

    /** Greedy, or top-k of one, which is the same thing. */
    public boolean isGreedy() {
        return greedy || topK == 1;
    }
}
