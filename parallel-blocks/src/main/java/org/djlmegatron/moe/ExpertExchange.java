package org.djlmegatron.moe;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import org.djlmegatron.autograd.Tape;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.djlmegatron.comm.CollectiveException;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;

/**
 * Moves token rows between the ranks of an expert-parallel group and back (Megatron's
 * {@code alltoall} and {@code allgather} token dispatchers). The rows a rank sends are sorted by
 * global expert; rank j of the group holds experts {@code [j L, (j + 1) L)}. After
 * {@link #dispatch} a rank holds, grouped by its local expert, every row of the group routed to
 * its experts; {@link #combine} returns each expert output to the rank and position its row came
 * from. Both are tape functions whose backward is the reverse exchange.
 */
final class ExpertExchange {

    /** Communication threads of the overlapped dispatch (daemons, idle ones end after a minute). */
    private static final ExecutorService COMM = Executors.newCachedThreadPool(task -> {
        Thread t = new Thread(task, "moe-dispatch");
        t.setDaemon(true);
        return t;
    });

    private final ProcessGroup ep;
    private final MoeConfig.Dispatcher kind;
    private final int localExperts;
    private final long[][] counts; // counts[r][e]: rows rank r routes to global expert e
    private final long[] send;
    private final long[] recv;
    private final long maxCount;
    private final long[] grouped; // received row order -> grouped-by-local-expert order
    private final long[] localCounts;
    private final long localRows;
    private final long sentRows;
    private final MoeStats stats;

    /** Plans the exchange from this rank's per-expert row counts (one small all-gather: a host sync). */
    ExpertExchange(ProcessGroup ep, MoeConfig.Dispatcher kind, long[] perExpert, int localExperts, NDManager m,
            MoeStats stats) {
        long t0 = System.nanoTime();
        this.stats = stats;
        this.ep = ep;
        this.kind = kind;
        this.localExperts = localExperts;
        int n = ep.size();
        int experts = perExpert.length;
        float[] mine = new float[experts];
        for (int e = 0; e < experts; e++) {
            mine[e] = perExpert[e]; // exact: a micro-batch routes far fewer than 2^24 rows
        }
        float[] all;
        try (NDArray local = m.create(mine, new Shape(1, experts)); NDArray gathered = ep.allGather(local, 0)) {
            all = gathered.toFloatArray();
        }
        counts = new long[n][experts];
        for (int r = 0; r < n; r++) {
            for (int e = 0; e < experts; e++) {
                counts[r][e] = (long) all[r * experts + e];
            }
        }
        int me = ep.rank();
        send = new long[n];
        recv = new long[n];
        long max = 0;
        for (int j = 0; j < n; j++) {
            for (int l = 0; l < localExperts; l++) {
                send[j] += counts[me][j * localExperts + l];
                recv[j] += counts[j][me * localExperts + l];
            }
        }
        for (int r = 0; r < n; r++) {
            for (int j = 0; j < n; j++) {
                long c = 0;
                for (int l = 0; l < localExperts; l++) {
                    c += counts[r][j * localExperts + l];
                }
                max = Math.max(max, c);
            }
        }
        maxCount = max;
        localCounts = new long[localExperts];
        long rows = 0;
        for (long c : recv) {
            rows += c;
        }
        localRows = rows;
        long sent = 0;
        for (long c : send) {
            sent += c;
        }
        sentRows = sent;
        // received rows: by source rank, then local expert; regroup by local expert, then source
        long[] start = new long[n];
        for (int j = 1; j < n; j++) {
            start[j] = start[j - 1] + recv[j - 1];
        }
        grouped = new long[(int) rows];
        int next = 0;
        for (int l = 0; l < localExperts; l++) {
            for (int j = 0; j < n; j++) {
                long offset = start[j];
                for (int before = 0; before < l; before++) {
                    offset += counts[j][me * localExperts + before];
                }
                long c = counts[j][me * localExperts + l];
                for (long i = 0; i < c; i++) {
                    grouped[next++] = offset + i;
                }
                localCounts[l] += c;
            }
        }
        stats.addDispatchNanos(System.nanoTime() - t0);
    }

    /** Rows each local expert receives, in local-expert order. */
    long[] localCounts() {
        return localCounts;
    }

    /**
     * Starts the dispatch's exchange of {@code sorted} (detached) on a communication thread, so that
     * the caller can compute meanwhile ({@code --moe-shared-expert-overlap}); {@link #dispatch}
     * joins it. The caller must not use this group until then.
     */
    Future<NDArray> start(NDArray sorted) {
        NDArray rows = sorted.stopGradient();
        stats.addOverlappedDispatch();
        return COMM.submit(() -> forward(rows));
    }

    /** Sends this rank's expert-sorted rows {@code [sent, h]}; returns the local experts' rows, grouped. */
    NDArray dispatch(Tape tape, NDArray sorted) {
        return dispatch(tape, sorted, null);
    }

    /** {@link #dispatch(Tape, NDArray)}, its forward exchange already {@code started} (null: not yet). */
    NDArray dispatch(Tape tape, NDArray sorted, Future<NDArray> started) {
        NDArray received = tape.function(new NDList(sorted),
                in -> new NDList(started == null ? forward(in.get(0)) : join(started)),
                g -> new NDList(backward(g.get(0)))).get(0);
        return localRows == 0 ? received : received.get(received.getManager().create(grouped));
    }

    /** The local experts' outputs (grouped as dispatched) back to the rows' ranks, in their sorted order. */
    NDArray combine(Tape tape, NDArray outputs) {
        NDArray received = localRows == 0 ? outputs : outputs.get(outputs.getManager().create(inverse()));
        return tape.function(new NDList(received), in -> new NDList(backward(in.get(0))),
                g -> new NDList(forward(g.get(0)))).get(0);
    }

    /**
     * The started exchange's rows. No timeout of its own: the exchange's collectives time out
     * (the group's limit) and then fail it, which is rethrown here.
     */
    private static NDArray join(Future<NDArray> started) {
        try {
            return started.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new CollectiveException("interrupted while waiting for the expert dispatch", e);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof RuntimeException r) {
                throw r;
            }
            if (e.getCause() instanceof Error err) {
                throw err;
            }
            throw new CollectiveException("the expert dispatch failed: " + e.getCause(), e.getCause());
        }
    }

    /** Rows of this rank to their experts' ranks. */
    private NDArray forward(NDArray rows) {
        long t0 = System.nanoTime();
        try {
            return exchange(rows);
        } finally {
            stats.addDispatchNanos(System.nanoTime() - t0);
        }
    }

    private NDArray backward(NDArray rows) {
        long t0 = System.nanoTime();
        try {
            return transpose(rows);
        } finally {
            stats.addDispatchNanos(System.nanoTime() - t0);
        }
    }

    private NDArray exchange(NDArray rows) {
        if (kind == MoeConfig.Dispatcher.ALLTOALL) {
            return ep.allToAllV(rows, send, recv, maxCount);
        }
        // allgather: every rank's rows everywhere, each keeps those of its experts
        NDArray all = gatherAll(rows);
        return select(all, receivedRanges(), localRows);
    }

    /** Rows held for this rank's experts back to the ranks they came from (the transpose of forward). */
    private NDArray transpose(NDArray rows) {
        if (kind == MoeConfig.Dispatcher.ALLTOALL) {
            return ep.allToAllV(rows, recv, send, maxCount);
        }
        // transpose of gather-then-select: scatter into the group-wide buffer, reduce-scatter it
        long[][] ranges = receivedRanges();
        long[] rowShape = rows.getShape().getShape();
        long total = totalRowsPadded();
        NDManager m = rows.getManager();
        NDList pieces = new NDList();
        long at = 0;
        long taken = 0;
        for (long[] r : ranges) {
            if (r[0] > at) {
                pieces.add(zeros(m, r[0] - at, rows));
            }
            pieces.add(rows.get(new ai.djl.ndarray.index.NDIndex("{}:{}", taken, taken + r[1])));
            taken += r[1];
            at = r[0] + r[1];
        }
        if (total > at) {
            pieces.add(zeros(m, total - at, rows));
        }
        NDArray full = pieces.size() == 1 ? pieces.get(0) : ai.djl.ndarray.NDArrays.concat(pieces);
        NDArray mine = ep.reduceScatter(full, 0, ReduceOp.SUM);
        long[] shape = rowShape.clone();
        shape[0] = sentRows;
        return mine.get(new ai.djl.ndarray.index.NDIndex("0:{}", sentRows)).reshape(new Shape(shape));
    }

    /** Every rank's rows, each padded to the largest count, concatenated in group order. */
    private NDArray gatherAll(NDArray rows) {
        long pad = rowsPerRankPadded() - sentRows;
        NDArray padded = pad == 0 ? rows : ai.djl.ndarray.NDArrays.concat(new NDList(rows, zeros(rows.getManager(), pad, rows)));
        return ep.allGather(padded, 0);
    }

    /** For each source rank: where (in the gathered buffer) the rows for this rank's experts start, and how many. */
    private long[][] receivedRanges() {
        int n = ep.size();
        int me = ep.rank();
        long[][] out = new long[n][2];
        long per = rowsPerRankPadded();
        for (int j = 0; j < n; j++) {
            long before = 0;
            for (int e = 0; e < me * localExperts; e++) {
                before += counts[j][e];
            }
            out[j][0] = j * per + before;
            out[j][1] = recv[j];
        }
        return out;
    }

    private long rowsPerRankPadded() {
        long max = 0;
        for (long[] r : counts) {
            long s = 0;
            for (long c : r) {
                s += c;
            }
            max = Math.max(max, s);
        }
        return Math.max(max, 1);
    }

    private long totalRowsPadded() {
        return rowsPerRankPadded() * ep.size();
    }

    private static NDArray select(NDArray all, long[][] ranges, long rows) {
        NDList pieces = new NDList();
        for (long[] r : ranges) {
            if (r[1] > 0) {
                pieces.add(all.get(new ai.djl.ndarray.index.NDIndex("{}:{}", r[0], r[0] + r[1])));
            }
        }
        if (pieces.isEmpty()) {
            return all.get(new ai.djl.ndarray.index.NDIndex("0:0"));
        }
        return pieces.size() == 1 ? pieces.get(0) : ai.djl.ndarray.NDArrays.concat(pieces);
    }

    private static NDArray zeros(NDManager m, long rows, NDArray like) {
        long[] shape = like.getShape().getShape().clone();
        shape[0] = rows;
        return m.zeros(new Shape(shape), like.getDataType());
    }

    private long[] inverse() {
        long[] inv = new long[grouped.length];
        for (int i = 0; i < grouped.length; i++) {
            inv[(int) grouped[i]] = i;
        }
        return inv;
    }
}
