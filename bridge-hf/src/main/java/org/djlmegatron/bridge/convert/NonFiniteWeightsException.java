package org.djlmegatron.bridge.convert;

/** A checkpoint tensor holding NaN or infinite values: damaged bytes or a diverged run. */
public final class NonFiniteWeightsException extends CheckpointException {

    private static final long serialVersionUID = 1L;

    public NonFiniteWeightsException(String file, String tensor, int bad, int total, int firstIndex, float first) {
        super(file + ": tensor '" + tensor + "' holds " + bad + " non-finite values of " + total + " (first at index "
                + firstIndex + ": " + first + "); damaged or diverged; pass --allow-nonfinite to load it anyway");
    }
}
