package org.djlmegatron.data.batches;

import java.util.List;
import org.djlmegatron.training.model.MicroBatch;

/** Training data by iteration: each data-parallel rank's micro-batches of a global batch. */
public interface BatchSource {

    /**
     * The micro-batches of data-parallel rank {@code dpRank} for iteration {@code iteration}
     * (0-based): the global batch's rows split across DP ranks in order, then into micro-batches.
     */
    List<MicroBatch> microBatches(long iteration, int dpRank, int dpSize, int microBatchSize, int globalBatchSize);

    /** Tokens per sample (the model's sequence length). */
    int seqLength();
}
