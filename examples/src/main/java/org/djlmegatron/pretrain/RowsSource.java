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
        return split(iteration, dpRank, dpSize, microBatchSize, globalBatchSize, this::row);
    }

    /** A way to fetch the row at a global-batch position. */
    interface Rows {
        long[] row(long iteration, int index, int globalBatchSize);
    }

    /** The rows of one DP rank, in order, cut into micro-batches. */
    static List<MicroBatch> split(long iteration, int dpRank, int dpSize, int microBatchSize, int globalBatchSize,
            Rows rows) {
        int perRank = globalBatchSize / dpSize;
        int first = dpRank * perRank;
        List<MicroBatch> out = new ArrayList<>();
        for (int start = 0; start < perRank; start += microBatchSize) {
            long[][] batch = new long[microBatchSize][];
            for (int r = 0; r < microBatchSize; r++) {
                batch[r] = rows.row(iteration, first + start + r, globalBatchSize);
            }
            out.add(MicroBatch.shifted(batch));
        }
        return out;
    }
}
