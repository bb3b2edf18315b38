package org.djlmegatron.data.batches;

import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.data.InvalidDataException;
import org.djlmegatron.training.model.MicroBatch;

/** A batch source defined by rows of {@code seq + 1} tokens per global-batch position. */
public abstract class RowsSource implements BatchSource {

    private int vocabSize = Integer.MAX_VALUE;
    private String name = "";

    /**
     * Refuses rows holding token ids outside {@code [0, vocabSize)}, naming {@code name} (e.g. a
     * dataset made with another tokenizer), rather than failing deep in the embedding.
     */
    public void limitTokens(int vocabSize, String name) {
        this.vocabSize = vocabSize;
        this.name = name;
    }

    /** Whether rows may hold {@link MicroBatch#PAD} (a masked label); sources of real text may not. */
    protected boolean allowsPad() {
        return false;
    }

    /** {@code rows} with every row checked against the vocabulary. */
    protected Rows checked(Rows rows) {
        boolean pad = allowsPad();
        return (iteration, index, gbs) -> {
            long[] row = rows.row(iteration, index, gbs);
            for (long id : row) {
                if ((id < 0 || id >= vocabSize) && !(pad && id == MicroBatch.PAD)) {
                    throw new InvalidDataException(name + ": token id " + id + " (iteration " + (iteration + 1)
                            + ", batch row " + index + ") is outside the vocabulary [0, " + vocabSize
                            + "); was it made with another tokenizer? give its --tokenizer-type/--tokenizer-model "
                            + "or a larger --vocab-size");
                }
            }
            return row;
        };
    }

    /** Row {@code index} (0-based within the global batch) of iteration {@code iteration}. */
    protected abstract long[] row(long iteration, int index, int globalBatchSize);

    @Override
    public List<MicroBatch> microBatches(long iteration, int dpRank, int dpSize, int microBatchSize,
            int globalBatchSize) {
        return split(iteration, dpRank, dpSize, microBatchSize, globalBatchSize, checked(this::row));
    }

    /** A way to fetch the row at a global-batch position. */
    public interface Rows {
        long[] row(long iteration, int index, int globalBatchSize);
    }

    /** The rows of one DP rank, in order, cut into micro-batches. */
    protected static List<MicroBatch> split(long iteration, int dpRank, int dpSize, int microBatchSize, int globalBatchSize,
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
