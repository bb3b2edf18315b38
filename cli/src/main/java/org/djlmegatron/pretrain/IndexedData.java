package org.djlmegatron.pretrain;

import java.util.Optional;
import org.djlmegatron.data.DataBlend;
import org.djlmegatron.data.DatasetSplits;
import org.djlmegatron.data.GPTDatasetConfig;
import org.djlmegatron.data.SampleDataset;
import org.djlmegatron.data.SplitMatrix;
import org.djlmegatron.data.batches.RowsSource;

/**
 * {@code --data-path}: Megatron {@code .bin/.idx} datasets (blended and split as Megatron does),
 * read through Megatron's document/sample/shuffle indices. Sample {@code iteration * gbs + index}
 * of the train split fills each global-batch position, so a resumed run reads exactly the samples
 * the first run would have read next; evaluation reads the validation split the same way.
 */
final class IndexedData extends RowsSource implements AutoCloseable {

    private final DatasetSplits splits;
    private final SampleDataset train;
    private final Optional<SampleDataset> valid;

    IndexedData(PretrainOptions o, int gbs) {
        long evals = o.evalInterval > 0 ? o.trainIters / o.evalInterval + 1 : 0; // Megatron's sample counts
        Integer[] sizes = {Math.toIntExact(o.trainIters * gbs), Math.toIntExact(evals * o.evalIters * gbs),
            o.evalIters * gbs};
        splits = DatasetSplits.build(DataBlend.parse(o.dataPath), SplitMatrix.parse(o.split), sizes,
                new GPTDatasetConfig(o.seqLength, o.seed, o.dataCachePath));
        train = splits.train().orElseThrow(() -> new IllegalArgumentException(
                "--split " + o.split + " leaves no training data"));
        valid = splits.valid();
    }

    @Override
    public int seqLength() {
        return train.sequenceLength();
    }

    @Override
    protected long[] row(long iteration, int index, int globalBatchSize) {
        return sample(iteration, index, globalBatchSize);
    }

    /** This DP rank's micro-batches of evaluation pass {@code pass}. */
    java.util.List<org.djlmegatron.training.model.MicroBatch> validBatches(long pass, int dpRank, int dpSize, int micro,
            int gbs) {
        return split(pass, dpRank, dpSize, micro, gbs, checked(this::validRow));
    }

    /** Rows for evaluation pass {@code pass}: the validation split (the train split when there is none). */
    long[] validRow(long pass, int index, int globalBatchSize) {
        SampleDataset d = valid.orElse(train);
        long i = (pass * globalBatchSize + index) % d.size();
        return d.sample((int) i);
    }

    private long[] sample(long iteration, int index, int gbs) {
        long i = iteration * gbs + index;
        if (i >= train.size()) {
            throw new IllegalArgumentException("the train split holds " + train.size() + " samples; iteration "
                    + (iteration + 1) + " needs sample " + i);
        }
        return train.sample((int) i);
    }

    @Override
    public void close() {
        splits.close();
    }
}
