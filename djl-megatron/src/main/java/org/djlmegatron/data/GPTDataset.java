package org.djlmegatron.data;

/**
 * Megatron's {@code GPTDataset}: fixed-length samples cut from a contiguous range of an
 * {@link IndexedDataset}'s sequences, crossing document boundaries, over as many shuffled epochs
 * as the requested sample count needs, in a seeded shuffled order (see {@link GPTIndices}).
 *
 * <p>{@link #size()} is every sample the epochs hold (Megatron's {@code len}), at least the
 * requested count. The last partial sample of the last epoch is dropped, so every sample has
 * exactly {@code sequenceLength() + 1} tokens and needs no padding.
 */
public final class GPTDataset implements SampleDataset {

    private final IndexedDataset data;
    private final int begin;
    private final int end;
    private final int sequenceLength;
    private final GPTIndices indices;

    private GPTDataset(IndexedDataset data, int begin, int end, int sequenceLength, GPTIndices indices) {
        this.data = data;
        this.begin = begin;
        this.end = end;
        this.sequenceLength = sequenceLength;
        this.indices = indices;
    }

    /**
     * Samples over sequences {@code [begin, end)} of {@code data}.
     *
     * @param numSamples samples the caller will read, or null for exactly one epoch
     * @throws InvalidDataException if the range holds fewer than 2 tokens
     */
    public static GPTDataset build(IndexedDataset data, Split split, int begin, int end, Integer numSamples,
            GPTDatasetConfig config) {
        if (begin < 0 || begin > end || end > data.sequenceCount()) {
            throw new IllegalArgumentException("sequence range [" + begin + ", " + end + ") outside [0, "
                    + data.sequenceCount() + ") of " + data.prefix());
        }
        if (numSamples != null && numSamples < 0) {
            throw new IllegalArgumentException("numSamples must be >= 0, found " + numSamples);
        }
        GPTIndices indices = GPTIndices.of(data, split, begin, end, numSamples, config);
        return new GPTDataset(data, begin, end, config.sequenceLength(), indices);
    }

    @Override
    public int size() {
        return indices.samples();
    }

    @Override
    public int sequenceLength() {
        return sequenceLength;
    }

    @Override
    public long[] sample(int index) {
        if (index < 0 || index >= size()) {
            throw new IndexOutOfBoundsException("sample " + index + " outside [0, " + size() + ")");
        }
        int[] documents = indices.documentIndex();
        int[] starts = indices.sampleIndex();
        int s = indices.shuffleIndex()[index];
        int first = starts[2 * s];
        int firstOffset = starts[2 * s + 1];
        int last = starts[2 * s + 2];
        int lastOffset = starts[2 * s + 3];
        long[] tokens = new long[sequenceLength + 1];
        int at = 0;
        for (int d = first; d <= last; d++) {
            int offset = d == first ? firstOffset : 0;
            int length = d < last ? data.sequenceLength(documents[d]) - offset : lastOffset + 1 - offset;
            data.read(documents[d], offset, tokens, at, length);
            at += length;
        }
        if (at != tokens.length) {
            throw new IllegalStateException("sample " + index + " has " + at + " tokens, expected " + tokens.length);
        }
        return tokens;
    }

    /** Passes over the split that the samples take. */
    public int epochs() {
        return indices.epochs();
    }

    /** The first sequence of the split. */
    public int begin() {
        return begin;
    }

    /** One past the last sequence of the split. */
    public int end() {
        return end;
    }

    GPTIndices indices() {
        return indices;
    }
}
