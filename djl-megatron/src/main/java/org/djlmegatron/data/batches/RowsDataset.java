package org.djlmegatron.data.batches;

import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.training.dataset.RandomAccessDataset;
import ai.djl.training.dataset.Record;
import ai.djl.util.Progress;
import java.util.Arrays;

/**
 * A batch source's samples as a DJL {@link RandomAccessDataset}: record {@code i} is global
 * sample {@code i} (position {@code i mod gbs} of global batch {@code i / gbs}), data
 * {@code row[:-1]} and labels {@code row[1:]} as int64 {@code [seq]}, token ids checked against
 * the vocabulary as {@code pretrain-gpt} checks them. Sample it with a
 * {@link MegatronPretrainingSampler} to get each data-parallel rank's share of each global batch.
 */
public final class RowsDataset extends RandomAccessDataset {

    private final RowsSource.Rows rows;
    private final int globalBatchSize;
    private final long samples;

    private RowsDataset(Builder b) {
        super(b);
        rows = b.source.checked(b.source::row);
        globalBatchSize = b.globalBatchSize;
        samples = b.iterations * b.globalBatchSize;
    }

    /** The samples of {@code iterations} global batches of {@code globalBatchSize} from {@code source}. */
    public static Builder builder(RowsSource source, int globalBatchSize, long iterations) {
        return new Builder(source, globalBatchSize, iterations);
    }

    @Override
    public Record get(NDManager manager, long index) {
        long[] row = rows.row(index / globalBatchSize, (int) (index % globalBatchSize), globalBatchSize);
        return new Record(new NDList(manager.create(Arrays.copyOfRange(row, 0, row.length - 1))),
                new NDList(manager.create(Arrays.copyOfRange(row, 1, row.length))));
    }

    @Override
    protected long availableSize() {
        return samples;
    }

    @Override
    public void prepare(Progress progress) {}

    /** Builder of {@link RowsDataset}; set the sampler ({@link MegatronPretrainingSampler}) with {@code setSampling}. */
    public static final class Builder extends BaseBuilder<Builder> {
        private final RowsSource source;
        private final int globalBatchSize;
        private final long iterations;

        private Builder(RowsSource source, int globalBatchSize, long iterations) {
            this.source = source;
            this.globalBatchSize = globalBatchSize;
            this.iterations = iterations;
        }

        public RowsDataset build() {
            if (sampler == null) {
                throw new IllegalArgumentException("RowsDataset: no sampler; give setSampling(new MegatronPretrainingSampler(...))");
            }
            return new RowsDataset(this);
        }

        @Override
        protected Builder self() {
            return this;
        }
    }
}
