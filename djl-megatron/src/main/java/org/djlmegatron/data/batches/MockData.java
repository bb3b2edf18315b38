package org.djlmegatron.data.batches;

import java.util.SplittableRandom;

/**
 * {@code --mock-data}: synthetic sequences a model can learn, generated from the seed alone:
 * each sample is an arithmetic progression modulo the vocabulary with a random start and a small
 * random stride, so after two tokens the rest is predictable and the loss falls quickly.
 */
public final class MockData extends RowsSource {

    private final int seq;
    private final int vocab;
    private final long seed;

    public MockData(int seq, int vocab, long seed) {
        this.seq = seq;
        this.vocab = vocab;
        this.seed = seed;
    }

    @Override
    public int seqLength() {
        return seq;
    }

    @Override
    protected long[] row(long iteration, int index, int globalBatchSize) {
        long sample = iteration * globalBatchSize + index;
        SplittableRandom rng = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + sample);
        long start = rng.nextInt(vocab);
        long stride = 1 + rng.nextInt(7);
        long[] row = new long[seq + 1];
        for (int t = 0; t <= seq; t++) {
            row[t] = (start + stride * t) % vocab;
        }
        return row;
    }
}
