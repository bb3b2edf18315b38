package org.djlmegatron.data;

/**
 * Training samples for a GPT: what the trainer reads. Sample {@code i} is
 * {@code sequenceLength() + 1} token ids; inputs are its first {@code sequenceLength()}
 * tokens and labels its last {@code sequenceLength()} (Megatron's
 * {@code add_extra_token_to_sequence}). Samples are already shuffled: read them in index order.
 * Safe to read from many threads.
 */
public interface SampleDataset {

    /** The number of samples. */
    int size();

    /** Tokens per sample minus one: the model's sequence length. */
    int sequenceLength();

    /** Sample {@code index}: {@code sequenceLength() + 1} token ids. */
    long[] sample(int index);
}
