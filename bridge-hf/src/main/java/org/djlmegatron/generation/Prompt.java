package org.djlmegatron.generation;

/**
 * One row of a generation batch.
 *
 * @param ids the prompt's token ids (at least one)
 * @param maxNewTokens tokens to generate at most (fewer at the end-of-sequence token or the end
 *     of the context)
 * @param sampling how tokens are chosen
 * @param seed seeds this row's random draws, so a row samples the same tokens whatever it is
 *     batched with and at any tensor-parallel size
 */
public record Prompt(long[] ids, int maxNewTokens, Sampling sampling, long seed) {

    public Prompt {
        if (ids == null || ids.length == 0) {
            throw new InvalidRequestException("empty prompt: it needs at least one token");
        }
        if (maxNewTokens < 0) {
            throw new InvalidRequestException("the number of tokens to generate must be >= 0, found " + maxNewTokens);
        }
    }
}
