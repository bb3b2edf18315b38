package org.djlmegatron.data;

/** Megatron's three dataset splits, in {@code --split} order. */
public enum Split {
    TRAIN,
    VALID,
    TEST;

    /** Megatron's name ({@code train}, {@code valid}, {@code test}), used in cache file names. */
    public String label() {
        return name().toLowerCase();
    }
}
