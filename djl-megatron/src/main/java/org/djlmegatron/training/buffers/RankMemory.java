package org.djlmegatron.training.buffers;

/**
 * Bytes of model state one rank holds between steps, measured as the sizes of the arrays it keeps
 * (not an estimate from a formula): the weights, the gradients kept between micro-batches, and
 * the optimizer (fp32 masters where they are not the weights themselves, plus the optimizer's
 * moments).
 */
public record RankMemory(long parameterBytes, long gradientBytes, long optimizerBytes) {

    public long total() {
        return parameterBytes + gradientBytes + optimizerBytes;
    }

    /** Each part per model parameter ({@code parameters}: the model's size, all ranks together). */
    public double[] perParameter(long parameters) {
        double n = parameters;
        return new double[] {parameterBytes / n, gradientBytes / n, optimizerBytes / n, total() / n};
    }
}
