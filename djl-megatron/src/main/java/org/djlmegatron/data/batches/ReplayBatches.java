package org.djlmegatron.data.batches;

import java.nio.file.Path;
import java.util.Arrays;
import org.djlmegatron.io.SafetensorsReader;
import org.djlmegatron.io.TensorInfo;
import org.djlmegatron.training.model.MicroBatch;

/**
 * {@code --replay-batches}: iteration i trains on global batch i of an int64 tensor
 * {@code [iters, global_batch, seq + 1]}: inputs {@code row[:-1]}, labels {@code row[1:]}. A
 * token -1 ({@link MicroBatch#PAD}, Megatron's pad id) is a padding label left out of the loss,
 * e.g. to right-pad recorded sequences to a length that splits over TP x SP or CP.
 */
public final class ReplayBatches extends RowsSource {

    private final long[] tokens;
    private final int iters;
    private final int batch;
    private final int width;

    public ReplayBatches(Path file, String key) {
        try (SafetensorsReader r = SafetensorsReader.open(file)) {
            if (!r.contains(key)) {
                throw new IllegalArgumentException(file + ": no tensor \"" + key + "\" (found: "
                        + String.join(", ", r.keys()) + ")");
            }
            TensorInfo info = r.info(key);
            long[] shape = info.shape();
            if (shape.length != 3 || shape[2] < 2) {
                throw new IllegalArgumentException(file + ": \"" + key
                        + "\" must be [iters, global_batch, seq+1] with seq >= 1, found " + Arrays.toString(shape));
            }
            iters = (int) shape[0];
            batch = (int) shape[1];
            width = (int) shape[2];
            tokens = r.loadLongs(key);
        }
    }

    @Override
    protected boolean allowsPad() {
        return true;
    }

    /** Iterations available. */
    public int iterations() {
        return iters;
    }

    public int globalBatch() {
        return batch;
    }

    @Override
    public int seqLength() {
        return width - 1;
    }

    @Override
    protected long[] row(long iteration, int index, int globalBatchSize) {
        if (iteration >= iters) {
            throw new IllegalArgumentException("replay batches hold " + iters + " iterations; iteration "
                    + (iteration + 1) + " was requested (lower --train-iters)");
        }
        if (globalBatchSize != batch) {
            throw new IllegalArgumentException("replay batches have global batch " + batch
                    + " but --global-batch-size is " + globalBatchSize);
        }
        int from = (int) ((iteration * batch + index) * width);
        return Arrays.copyOfRange(tokens, from, from + width);
    }
}
