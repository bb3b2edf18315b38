package org.djlmegatron.data.batches;

import ai.djl.training.dataset.RandomAccessDataset;
import ai.djl.training.dataset.Sampler;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;

/**
 * Megatron's {@code MegatronPretrainingSampler} as a DJL {@link Sampler}: global batch {@code i}
 * holds samples {@code [i x gbs, (i + 1) x gbs)} in order, and data-parallel rank {@code r} gets
 * its contiguous slice {@code [r x gbs / dp, (r + 1) x gbs / dp)}, from {@code consumedSamples}
 * on (a resumed run reads what the first run would have read next). Each DJL batch is one rank's
 * share of one global batch, as {@code pretrain-gpt}'s batch sources split it.
 */
public final class MegatronPretrainingSampler implements Sampler {

    private final int globalBatchSize;
    private final int dpRank;
    private final int dpSize;
    private final long consumedSamples;

    public MegatronPretrainingSampler(int globalBatchSize, int dpRank, int dpSize, long consumedSamples) {
        if (dpSize < 1 || dpRank < 0 || dpRank >= dpSize || globalBatchSize % dpSize != 0) {
            throw new IllegalArgumentException("MegatronPretrainingSampler: global batch size " + globalBatchSize
                    + " must split evenly over data-parallel size " + dpSize + " (rank " + dpRank + ")");
        }
        if (consumedSamples % globalBatchSize != 0) {
            throw new IllegalArgumentException("MegatronPretrainingSampler: consumed samples " + consumedSamples
                    + " is not a multiple of the global batch size " + globalBatchSize);
        }
        this.globalBatchSize = globalBatchSize;
        this.dpRank = dpRank;
        this.dpSize = dpSize;
        this.consumedSamples = consumedSamples;
    }

    /** This rank's rows per global batch. */
    @Override
    public int getBatchSize() {
        return globalBatchSize / dpSize;
    }

    @Override
    public Iterator<List<Long>> sample(RandomAccessDataset dataset) {
        long batches = dataset.size() / globalBatchSize; // a last partial global batch is dropped, as Megatron does
        int share = getBatchSize();
        return new Iterator<>() {
            private long next = consumedSamples / globalBatchSize;

            @Override
            public boolean hasNext() {
                return next < batches;
            }

            @Override
            public List<Long> next() {
                if (!hasNext()) {
                    throw new NoSuchElementException();
                }
                long first = next * globalBatchSize + (long) dpRank * share;
                List<Long> out = new ArrayList<>(share);
                for (int i = 0; i < share; i++) {
                    out.add(first + i);
                }
                next++;
                return out;
            }
        };
    }
}
