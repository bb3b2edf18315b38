package org.djlmegatron.context;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.nn.VocabParallelCrossEntropy;

/**
 * Context parallelism's sequence layout (Megatron's causal load balancing): a sequence of length
 * S is cut into 2N chunks of S/2N tokens and rank r of the N-rank context group holds chunks r and
 * 2N-1-r, so every rank has the same share of the causal attention's work. The model sees this
 * rank's 2 chunks; positions, masks and the loss use the tokens' global positions.
 */
public final class ContextParallel {

    private final ProcessGroup group;
    private final CpCommType commType;

    public ContextParallel(ProcessGroup group, CpCommType commType) {
        this.group = group;
        this.commType = commType;
    }

    public ProcessGroup group() {
        return group;
    }

    public int size() {
        return group.size();
    }

    public int rank() {
        return group.rank();
    }

    public CpCommType commType() {
        return commType;
    }

    /** Refuses a sequence length the layout cannot cut: a clear message naming the flag. */
    public void checkSequence(long seq) {
        if (seq % (2L * size()) != 0) {
            throw new IllegalArgumentException("sequence length " + seq + " is not divisible by 2 x "
                    + "--context-parallel-size = " + 2 * size() + " (causal load balancing cuts it in 2N chunks)");
        }
    }

    /** Global positions of the {@code 2c} tokens rank {@code r} holds (chunks r and 2N-1-r of length c). */
    public long[] positions(int r, long localLength) {
        long c = localLength / 2;
        long[] p = new long[(int) localLength];
        for (int i = 0; i < c; i++) {
            p[i] = r * c + i;
            p[(int) c + i] = (2L * size() - 1 - r) * c + i;
        }
        return p;
    }

    /** This rank's global positions for a local sequence of {@code localLength} tokens (one array per length). */
    public long[] positions(long localLength) {
        long[] p = ownPositions;
        if (p == null || p.length != localLength) {
            p = positions(rank(), localLength);
            ownPositions = p;
        }
        return p;
    }

    private volatile long[] ownPositions;

    /** Global positions of the concatenation, in group-rank order, of every rank's local tokens. */
    public long[] allPositions(long localLength) {
        long[] all = new long[(int) (localLength * size())];
        for (int r = 0; r < size(); r++) {
            System.arraycopy(positions(r, localLength), 0, all, (int) (r * localLength), (int) localLength);
        }
        return all;
    }

    /** This rank's two chunks of a full sequence {@code [b, S, ...]} (axis 1), concatenated. */
    public NDArray localChunks(NDArray full) {
        long seq = full.getShape().get(1);
        checkSequence(seq);
        long c = seq / (2L * size());
        int r = rank();
        long late = 2L * size() - 1 - r;
        NDArray first = full.get(new NDIndex(":, {}:{}", r * c, (r + 1) * c));
        NDArray second = full.get(new NDIndex(":, {}:{}", late * c, (late + 1) * c));
        return NDArrays.concat(new NDList(first, second), 1);
    }

    /**
     * The mean loss over the whole sequence from this rank's token losses, as Megatron reduces it:
     * the local sum over the global count of valid labels (all-reduced over the context group),
     * times N, so that averaging gradients and losses over data x context parallelism gives the mean.
     */
    public NDArray meanLoss(NDArray tokenLosses, NDArray localLabels) {
        NDManager m = tokenLosses.getManager();
        float localCount = localLabels.gte(VocabParallelCrossEntropy.IGNORE_BELOW).toType(DataType.FLOAT32, false)
                .sum().getFloat();
        float count;
        try (NDManager tmp = m.newSubManager()) {
            count = group.allReduce(tmp.create(new float[] {localCount}), ReduceOp.SUM).getFloat(0);
        }
        return tokenLosses.sum().mul(m.create((float) size() / count));
    }
}
