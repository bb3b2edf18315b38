package org.djlmegatron.training.buffers;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.index.NDIndex;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.comm.CommThread;
import org.djlmegatron.comm.PendingWork;
import org.djlmegatron.comm.ProcessGroup;

/**
 * {@code --overlap-param-gather}: under the distributed optimizer each rank updates its shard (a
 * contiguous slice of the {@link ParamAndGradBuffer}) and the others need it back before they use
 * those weights. Instead of one all-gather on the compute thread after the optimizer, the shards
 * are all-gathered in chunks on the rank's {@link CommThread}; the next forward waits, at each
 * parameter's first use ({@code Tape.onUse}), only for the chunks that hold it.
 *
 * <p>Chunk k gathers elements {@code [k C, (k+1) C)} of every rank's shard (C about
 * {@code --ddp-bucket-size / dp} elements, so a chunk moves about a bucket), an all-gather of
 * equal pieces that fills k's slice of every shard. Chunks finish in order, and the forward uses
 * the parameters in buffer order, so the embedding at the buffer's start waits for the first chunks only
 * when it fits in them. Anything else that reads the weights between steps (a checkpoint save)
 * calls {@link #awaitAll}.
 */
public final class ParamGatherer {

    private final ParamAndGradBuffer buffer;
    private final ProcessGroup group;
    private final CommThread comm;
    private final Overlap overlap;
    private final BucketOffsets layout;
    private final long shard;
    private final long chunk;
    private final int chunks;
    private final List<PendingWork<Void>> pending = new ArrayList<>();
    private int waited;
    private int waitedByUse;

    public ParamGatherer(ParamAndGradBuffer buffer, ProcessGroup group, long bucketElements, CommThread comm,
            Overlap overlap) {
        this.buffer = buffer;
        this.group = group;
        this.comm = comm;
        this.overlap = overlap;
        layout = new BucketOffsets(buffer.parameters());
        shard = buffer.paddedSize() / group.size();
        chunk = Math.max(1, Math.min(shard, bucketElements / group.size()));
        chunks = (int) ((shard + chunk - 1) / chunk);
    }

    /**
     * After the optimizer: starts the all-gathers of this rank's updated fp32 shard, elements
     * {@code [offset, offset + shard)} of {@code masters} (under expert parallelism the masters
     * hold the dense shard, then the expert shard); {@code mastersAreWeights} when they are a view
     * of this rank's slice of the weights (then that slice is not copied).
     */
    public void start(NDArray masters, long offset, boolean mastersAreWeights) {
        awaitAll();
        waited = 0;
        waitedByUse = 0;
        for (int k = 0; k < chunks; k++) {
            long lo = k * chunk;
            long hi = Math.min(shard, lo + chunk);
            String what = "overlapped parameter all-gather of chunk " + k + " of " + chunks + " (shard elements "
                    + lo + ".." + hi + ") on " + group.name();
            pending.add(comm.submit(what, overlap.waitLimit(), () -> {
                gather(masters, offset, lo, hi, mastersAreWeights);
                return null;
            }));
        }
    }

    /** The communication thread's part: one chunk of every shard into the weights. */
    private void gather(NDArray masters, long offset, long lo, long hi, boolean mastersAreWeights) {
        NDArray weights = buffer.params();
        long n = hi - lo;
        try (NDArray piece = masters.get(new NDIndex("{}:{}", offset + lo, offset + hi));
                NDArray all = group.allGather(piece, 0)) {
            for (int r = 0; r < group.size(); r++) {
                if (mastersAreWeights && r == group.rank()) {
                    continue; // the optimizer updated these weights in place
                }
                long at = r * shard + lo;
                try (NDArray src = all.get(new NDIndex("{}:{}", r * n, (r + 1) * n));
                        NDArray typed = src.toType(weights.getDataType(), false);
                        NDArray dst = weights.get(new NDIndex("{}:{}", at, at + n))) {
                    dst.set(new NDIndex("..."), typed);
                }
            }
        }
    }

    /** The tape's use listener: waits for the chunks that hold {@code reported}'s weights. */
    public void awaitUse(Object reported) {
        if (waited == pending.size()) {
            return;
        }
        int p = layout.indexOf(reported);
        if (p < 0) {
            return;
        }
        int need = lastChunk(layout.start(p), layout.end(p));
        if (need >= waited) {
            waitedByUse++;
        }
        awaitThrough(need);
    }

    /** Whether gathers were pending and no parameter use waited for any (a model that reports no uses). */
    public boolean pendingUnreported() {
        return !pending.isEmpty() && waited < pending.size() && waitedByUse == 0;
    }

    /** Waits for every chunk started (the weights are then all current). */
    public void awaitAll() {
        try {
            awaitThrough(pending.size() - 1);
        } finally {
            if (waited == pending.size()) {
                pending.clear();
                waited = 0;
            }
        }
    }

    private void awaitThrough(int k) {
        while (waited <= k && waited < pending.size()) {
            PendingWork<Void> w = pending.get(waited);
            waited++; // a failed chunk is not waited for twice: the failure is thrown once
            w.await();
        }
    }

    /** The last chunk holding any element of buffer range [a, b): chunks finish in order. */
    private int lastChunk(long a, long b) {
        int last = -1;
        for (long r = a / shard; r <= (b - 1) / shard && r < group.size(); r++) {
            long hi = Math.min(b, (r + 1) * shard) - r * shard;
            last = Math.max(last, (int) Math.min(chunks - 1, (hi - 1) / chunk));
        }
        return last;
    }
}
