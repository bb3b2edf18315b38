package org.djlmegatron.training;

/**
 * What one optimizer step did, identical on every rank.
 *
 * @param iteration 1-based iteration just completed
 * @param loss mean loss over the global batch (measured before the update)
 * @param gradNorm global gradient norm before clipping (unscaled)
 * @param lr learning rate used (0 if skipped)
 * @param lossScale loss scale used
 * @param skipped whether inf/NaN gradients skipped the update
 * @param tokens tokens in the global batch
 * @param seconds wall time of the step
 */
public record StepResult(
        long iteration, double loss, double gradNorm, double lr, double lossScale, boolean skipped,
        long tokens, double seconds) {}
