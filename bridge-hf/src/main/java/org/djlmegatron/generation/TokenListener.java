package org.djlmegatron.generation;

/** Told of every new token as it is chosen (streaming), on the generation thread. */
@FunctionalInterface
public interface TokenListener {

    TokenListener NONE = (row, id) -> { };

    /** Row {@code row} of the batch has chosen {@code id}. */
    void onToken(int row, long id);

    /** Row {@code row} is complete (end of sequence, its token limit, or the context). */
    default void onFinish(int row) {}
}
