package org.djlmegatron.optim;

/**
 * Megatron's learning-rate schedule ({@code OptimizerParamScheduler}), counted in optimizer
 * updates: linear warmup from 0, then constant, linear, cosine or WSD decay from {@code maxLr}
 * to {@code minLr} until {@code decayIters}, and {@code minLr} after. As in Megatron, update
 * {@code n} (0-based) uses {@code lr(n)}, so with warmup the first update has learning rate 0.
 *
 * @param maxLr peak learning rate ({@code --lr})
 * @param minLr floor ({@code --min-lr})
 * @param warmupIters updates of linear warmup
 * @param decayIters update at which decay ends
 * @param style decay style
 * @param wsdDecayIters for WSD: length of the final annealing phase
 * @param wsdStyle for WSD: shape of the annealing phase
 */
public record LearningRateSchedule(
        double maxLr, double minLr, long warmupIters, long decayIters, DecayStyle style,
        long wsdDecayIters, AnnealStyle wsdStyle) {

    /** {@code --lr-decay-style}. */
    public enum DecayStyle {
        CONSTANT, LINEAR, COSINE, INVERSE_SQUARE_ROOT, WSD
    }

    /** {@code --lr-wsd-decay-style}. */
    public enum AnnealStyle {
        LINEAR, COSINE, EXPONENTIAL, MINUS_SQRT
    }

    public LearningRateSchedule {
        if (maxLr < 0 || minLr < 0 || minLr > maxLr) {
            throw new IllegalArgumentException("need 0 <= min-lr <= lr, found lr=" + maxLr + " min-lr=" + minLr);
        }
        if (warmupIters < 0 || (style != DecayStyle.CONSTANT && decayIters <= warmupIters
                && style != DecayStyle.INVERSE_SQUARE_ROOT)) {
            throw new IllegalArgumentException("lr-decay-iters (" + decayIters
                    + ") must exceed lr-warmup-iters (" + warmupIters + ") for decay style " + style);
        }
    }

    /** A constant learning rate without warmup. */
    public static LearningRateSchedule constant(double lr) {
        return new LearningRateSchedule(lr, lr, 0, 1, DecayStyle.CONSTANT, 0, AnnealStyle.LINEAR);
    }

    /** Learning rate of update {@code n} (0-based). */
    public double lr(long n) {
        if (warmupIters > 0 && n <= warmupIters) {
            return maxLr * n / warmupIters;
        }
        if (style == DecayStyle.CONSTANT) {
            return maxLr;
        }
        if (n > decayIters) { // before inverse-square-root too, as in Megatron
            return minLr;
        }
        if (style == DecayStyle.INVERSE_SQUARE_ROOT) {
            long w = Math.max(warmupIters, 1);
            return Math.max(minLr, maxLr * Math.sqrt(w) / Math.sqrt(Math.max(n, 1)));
        }
        double ratio = (double) (n - warmupIters) / (decayIters - warmupIters);
        double coeff;
        switch (style) {
            case LINEAR:
                coeff = 1.0 - ratio;
                break;
            case COSINE:
                coeff = 0.5 * (Math.cos(Math.PI * ratio) + 1.0);
                break;
            default:
                coeff = wsdCoefficient(n);
                break;
        }
        return minLr + coeff * (maxLr - minLr);
    }

    private double wsdCoefficient(long n) {
        long annealStart = decayIters - wsdDecayIters;
        if (n <= annealStart) {
            return 1.0;
        }
        double r = (double) (n - annealStart) / wsdDecayIters;
        switch (wsdStyle) {
            case LINEAR:
                return 1.0 - r;
            case COSINE:
                return 0.5 * (Math.cos(Math.PI * r) + 1.0);
            case EXPONENTIAL: // Megatron: 2 * 0.5^r - 1, from 1 down to 0
                return 2.0 * Math.pow(0.5, r) - 1.0;
            default:
                return 1.0 - Math.sqrt(r);
        }
    }
}
