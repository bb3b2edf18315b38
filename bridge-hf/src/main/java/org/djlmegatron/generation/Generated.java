package org.djlmegatron.generation;

/**
 * What one prompt produced.
 *
 * @param promptIds the prompt's ids
 * @param ids the new tokens (the end-of-sequence token included when it stopped the row)
 * @param logprobs when asked for: the log-probability of every token after the first, prompt and
 *     new ones ({@code promptIds.length - 1 + ids.length} values), as Megatron's server returns them;
 *     else null
 * @param finishReason {@code stop} (end-of-sequence token) or {@code length} (max new tokens or
 *     the end of the context)
 */
public record Generated(long[] promptIds, long[] ids, double[] logprobs, String finishReason) {

    /** Prompt and new tokens. */
    public long[] allIds() {
        long[] all = java.util.Arrays.copyOf(promptIds, promptIds.length + ids.length);
        System.arraycopy(ids, 0, all, promptIds.length, ids.length);
        return all;
    }
}
