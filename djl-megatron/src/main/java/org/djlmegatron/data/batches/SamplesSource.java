package org.djlmegatron.data.batches;

import org.djlmegatron.data.SampleDataset;

/**
 * Megatron's GPT samples (a {@code GPTDataset}, a blend, one split of {@code DatasetSplits}) as a
 * batch source: global-batch position {@code index} of iteration {@code i} is sample
 * {@code i x gbs + index}, so a resumed run reads what the first run would have read next. Wrap it
 * in a {@link RowsDataset} for DJL.
 */
public final class SamplesSource extends RowsSource {

    private final SampleDataset samples;

    /** The samples of {@code samples}, their token ids checked against {@code vocabSize} (errors name {@code name}). */
    public SamplesSource(SampleDataset samples, int vocabSize, String name) {
        this.samples = samples;
        limitTokens(vocabSize, name);
    }

    @Override
    public int seqLength() {
        return samples.sequenceLength();
    }

    @Override
    protected long[] row(long iteration, int index, int globalBatchSize) {
        long i = iteration * globalBatchSize + index;
        if (i >= samples.size()) {
            throw new IllegalArgumentException("the dataset holds " + samples.size() + " samples; iteration "
                    + (iteration + 1) + " needs sample " + i);
        }
        return samples.sample((int) i);
    }
}
