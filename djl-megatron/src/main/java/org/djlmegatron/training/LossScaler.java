package org.djlmegatron.training;

/**
 * Loss scaling for fp16 (Megatron's {@code DynamicGradScaler}): a step whose gradients hold an
 * inf or NaN is skipped and, after {@code hysteresis} such steps, the scale is multiplied by
 * {@code backoff}; after {@code growthInterval} clean steps in a row it is multiplied by
 * {@code growth}. A static scaler never changes.
 */
public final class LossScaler {

    private final boolean dynamic;
    private final double minScale;
    private final double growth;
    private final double backoff;
    private final int growthInterval;
    private final int hysteresis;
    private double scale;
    private int cleanSteps;
    private int hysteresisLeft;

    private LossScaler(boolean dynamic, double scale, double minScale, double growth, double backoff,
            int growthInterval, int hysteresis) {
        this.dynamic = dynamic;
        this.scale = scale;
        this.minScale = minScale;
        this.growth = growth;
        this.backoff = backoff;
        this.growthInterval = growthInterval;
        this.hysteresis = hysteresis;
        this.hysteresisLeft = hysteresis;
    }

    /** No scaling (fp32). */
    public static LossScaler none() {
        return new LossScaler(false, 1.0, 1.0, 1, 1, Integer.MAX_VALUE, 1);
    }

    /** A fixed scale ({@code --loss-scale}). */
    public static LossScaler fixed(double scale) {
        return new LossScaler(false, scale, scale, 1, 1, Integer.MAX_VALUE, 1);
    }

    /** Megatron's defaults: {@code --initial-loss-scale} (2^32), min 1, x2 every 1000 clean steps, /2 after 2 overflows. */
    public static LossScaler dynamic(double initial, double minScale, int growthInterval, int hysteresis) {
        return new LossScaler(true, initial, minScale, 2.0, 0.5, growthInterval, hysteresis);
    }

    public double scale() {
        return scale;
    }

    public boolean isDynamic() {
        return dynamic;
    }

    /** Records the outcome of a step. */
    public void update(boolean foundInf) {
        if (!dynamic) {
            return;
        }
        if (foundInf) {
            cleanSteps = 0;
            hysteresisLeft--;
            if (hysteresisLeft <= 0) { // stays spent until the next growth, as in Megatron
                scale = Math.max(scale * backoff, minScale);
            }
            return;
        }
        cleanSteps++;
        if (cleanSteps == growthInterval) {
            cleanSteps = 0;
            hysteresisLeft = hysteresis;
            scale *= growth;
        }
    }

    /** State for checkpoints: scale, clean steps, hysteresis left. */
    public double[] state() {
        return new double[] {scale, cleanSteps, hysteresisLeft};
    }

    public void loadState(double[] s) {
        scale = s[0];
        cleanSteps = (int) s[1];
        hysteresisLeft = (int) s[2];
    }
}
