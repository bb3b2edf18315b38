package org.djlmegatron.pretrain;

import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.training.MicroBatch;

/** A batch source defined by rows of {@code seq + 1} tokens per global-batch position. */
abstract class RowsSource implements BatchSource {

    /** Row {@code index} (0-based within the global batch) of iteration {@code iteration}. */
    abstract long[] row(long iteration, int index, int globalBatchSize);

    @Override
    public List<MicroBatch> microBatches(long iteration, int dpRank, int dpSize, int microBatchSize,
            int globalBatchSize) {
        int perRank = globalBatchSize / dpSize;
        int first = dpRank * perRank;
        List<MicroBatch> out = new ArrayList<>();
        for (int start = 0; start < perRank; start += microBatchSize) {
            long[][] rows = new long[microBatchSize][];
            for (int r = 0; r < microBatchSize; r++) {
                rows[r] = row(iteration, first + start + r, globalBatchSize);
            }
            out.add(MicroBatch.shifted(rows));
        }
        return out;
    }
}
