package org.djlmegatron.training.buffers;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.index.NDIndex;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.djlmegatron.comm.CommThread;
import org.djlmegatron.comm.PendingWork;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.training.model.TrainableParameter;

/**
 * {@code --overlap-grad-reduce}: each bucket of a {@link ParamAndGradBuffer} is reduced over the
 * data-parallel group (and divided by the divisor) on the rank's {@link CommThread} as soon as the
 * backward it is armed for has finished every gradient in it, while backward goes on with earlier
 * layers. The tape reports finished parameters ({@code Tape.onGradientsFinal}, fed by the model's
 * {@code noteUse}s); buckets start strictly in order (bucket 0, the end of the buffer, first), so
 * that every rank issues the same collectives in the same order whatever order its parameters are
 * reported in. {@link #finish} starts what is left (parameters nobody reported) and waits for all:
 * the step calls it before it touches the gradients or the group again.
 *
 * <p>Without a sharded optimizer the per-bucket work is the non-overlapped step's: an all-reduce of
 * the bucket of the fp32 gradient buffer, a division, so the results are bit-identical. Under the
 * distributed optimizer (and ZeRO-2) a rank only needs its contiguous 1/DP slice of the buffer:
 * each bucket is cut into {@link OwnerPiece}s, one per slice it crosses, and each piece is reduced
 * to its owner alone ({@code ProcessGroup.reduce}), which writes the sum into its slice; the rest
 * of a rank's copy of the bucket is left unreduced and is not read. A bucket then moves what a
 * reduce-scatter of it would, with the checkpoints' contiguous shard layout rather than
 * Megatron's per-bucket one. Under ZeRO-2 the reducer is armed for every micro-batch, over that
 * micro-batch's workspace ({@link GradientShard}). With 16-bit weights the bucket's
 * last-micro-batch gradients are first widened and added into the fp32 main gradient (what the
 * step does for the earlier micro-batches, and without overlap for all of them).
 */
public final class BucketReducer {

    private final ParamAndGradBuffer buffer;
    private final ProcessGroup group;
    private final int divisor;
    private final CommThread comm;
    /** ZeRO-2 with 16-bit weights: the fp32 shard the owners add their widened sums into; null otherwise. */
    private final GradientShard wideInto;
    private final Overlap overlap;
    /** Per bucket, its pieces by owner under a sharded optimizer; null: buckets are all-reduced. */
    private final List<List<OwnerPiece>> pieces;
    private final BucketOffsets layout;
    /** Per parameter, the buckets it overlaps (a parameter may span several, a bucket hold several). */
    private final int[][] bucketsOf;
    private final int[] paramsIn;
    private final int[] remaining;
    private final boolean[] reported;
    /** Whether a parameter's final gradients count this step: all of them, or under pipelining the armed chunks'. */
    private final boolean[] armedParam;
    private final List<PendingWork<Void>> pending = new ArrayList<>();
    private boolean armed;
    private int next;
    /** The gradients the armed backward accumulates into: the fp32 main gradient or a ZeRO-2 workspace. */
    private NDArray grads;

    /**
     * Reduces the fp32 gradients of {@code buffer}'s layout over {@code group}, divided by
     * {@code divisor}: all of each bucket on every rank, or with {@code toOwners} each rank's slice
     * of it to that rank only.
     */
    public BucketReducer(ParamAndGradBuffer buffer, ProcessGroup group, int divisor, boolean toOwners,
            CommThread comm, Overlap overlap) {
        this(buffer, group, divisor, toOwners, null, comm, overlap);
    }

    /**
     * As above; with {@code wideInto} (ZeRO-2 with 16-bit weights) each piece of a 16-bit workspace
     * is widened to fp32 before its reduction, and its owner adds the sum into that shard.
     */
    public BucketReducer(ParamAndGradBuffer buffer, ProcessGroup group, int divisor, boolean toOwners,
            GradientShard wideInto, CommThread comm, Overlap overlap) {
        if (wideInto != null && (!toOwners || divisor != 1)) {
            throw new IllegalArgumentException("a gradient shard takes owner reductions without a divisor");
        }
        this.wideInto = wideInto;
        this.buffer = buffer;
        this.group = group;
        this.divisor = divisor;
        this.comm = comm;
        this.overlap = overlap;
        layout = new BucketOffsets(buffer.parameters());
        List<long[]> buckets = buffer.buckets();
        long shard = buffer.paddedSize() / group.size();
        pieces = toOwners ? buckets.stream().map(b -> OwnerPiece.of(b[0], b[1], shard)).toList() : null;
        bucketsOf = new int[layout.count()][];
        paramsIn = new int[buckets.size()];
        for (int p = 0; p < layout.count(); p++) {
            List<Integer> hit = new ArrayList<>();
            for (int b = 0; b < buckets.size(); b++) {
                if (layout.start(p) < buckets.get(b)[1] && buckets.get(b)[0] < layout.end(p)) {
                    hit.add(b);
                    paramsIn[b]++;
                }
            }
            bucketsOf[p] = hit.stream().mapToInt(Integer::intValue).toArray();
        }
        remaining = new int[buckets.size()];
        reported = new boolean[layout.count()];
        armedParam = new boolean[layout.count()];
    }

    /**
     * Before a backward whose gradients are the step's (the last micro-batch's; every one under
     * ZeRO-2): from now on, finished buckets of {@code gradients} (a vector of the buffer's padded
     * length, which the parameters' gradients view) start their reduction.
     */
    public void arm(NDArray gradients) {
        startArming(gradients);
        Arrays.fill(armedParam, true);
        startReadyBuckets(); // buckets of padding only
    }

    /**
     * Under pipelining, before a model chunk's last micro-batch's backward: from now on that
     * chunk's final gradients count (the other chunks' backwards of earlier micro-batches, which
     * the schedule interleaves with it, do not). The step's first call starts the arming over
     * {@code gradients}.
     */
    public void arm(NDArray gradients, List<TrainableParameter> chunkParameters) {
        if (!armed) {
            startArming(gradients);
        }
        for (TrainableParameter tp : chunkParameters) {
            int p = layout.indexOf(tp.array());
            if (p >= 0) {
                armedParam[p] = true;
            }
        }
        startReadyBuckets();
    }

    private void startArming(NDArray gradients) {
        grads = gradients;
        System.arraycopy(paramsIn, 0, remaining, 0, paramsIn.length);
        Arrays.fill(reported, false);
        Arrays.fill(armedParam, false);
        next = 0;
        pending.clear();
        armed = true;
    }

    /** The tape's gradient-final listener (the compute thread, during backward). */
    public void gradientsFinal(List<Object> done) {
        if (!armed) {
            return; // an earlier micro-batch: its gradients are not the step's yet
        }
        for (Object o : done) {
            int p = layout.indexOf(o);
            if (p < 0 || reported[p] || !armedParam[p]) {
                continue;
            }
            reported[p] = true;
            for (int b : bucketsOf[p]) {
                remaining[b]--;
            }
        }
        startReadyBuckets();
    }

    private void startReadyBuckets() {
        while (next < remaining.length && remaining[next] == 0) {
            start(next++);
        }
    }

    /**
     * Starts every bucket not started yet and waits for all: the main gradients are then summed
     * over the group and divided. A failure of any bucket's collective is thrown here.
     */
    public void finish() {
        if (!armed) {
            arm(buffer.mainGrads());
        }
        while (next < remaining.length) {
            start(next++);
        }
        armed = false;
        try {
            for (PendingWork<Void> w : pending) {
                w.await();
            }
        } finally {
            pending.clear();
        }
    }

    private void start(int b) {
        long[] range = buffer.buckets().get(b);
        String what = (pieces == null ? "overlapped gradient all-reduce" : "overlapped gradient reduce to the owners")
                + " of bucket " + b + " of " + remaining.length + " (elements "
                + range[0] + ".." + range[1] + ") on " + group.name();
        NDArray target = grads;
        pending.add(comm.submit(what, overlap.waitLimit(), () -> {
            buffer.accumulateIntoMain(range[0], range[1]); // 16-bit weights: the last micro-batch's gradients
            if (pieces == null) {
                reduce(target, range[0], range[1]);
            } else {
                reduceToOwners(target, pieces.get(b));
            }
            return null;
        }));
    }

    /** The communication thread's part: the non-overlapped step's work on one bucket. */
    /** ZeRO-2 with 16-bit weights: each piece widened, reduced in fp32 to its owner, added into the owner's shard. */
    private void reduceWideIntoShard(NDArray target, List<OwnerPiece> bucket) {
        for (OwnerPiece piece : bucket) {
            try (NDArray view = target.get(new NDIndex("{}:{}", piece.start(), piece.end()));
                    NDArray wide = view.toType(ai.djl.ndarray.types.DataType.FLOAT32, false);
                    NDArray sum = group.reduce(wide, piece.owner(), ReduceOp.SUM)) {
                if (sum != null) {
                    wideInto.addReduced(sum, piece.start());
                }
            }
        }
    }

    private void reduce(NDArray target, long start, long end) {
        NDIndex slice = new NDIndex("{}:{}", start, end);
        try (NDArray view = target.get(slice)) {
            try (NDArray sum = group.allReduce(view, ReduceOp.SUM)) {
                sum.divi(divisor);
                view.set(new NDIndex("..."), sum);
            }
        }
    }

    /** The communication thread's part under a sharded optimizer: each piece summed into its owner's slice only. */
    private void reduceToOwners(NDArray target, List<OwnerPiece> bucket) {
        if (wideInto != null) {
            reduceWideIntoShard(target, bucket);
            return;
        }
        for (OwnerPiece piece : bucket) {
            try (NDArray view = target.get(new NDIndex("{}:{}", piece.start(), piece.end()));
                    NDArray sum = group.reduce(view, piece.owner(), ReduceOp.SUM)) {
                if (sum != null) { // this rank owns the piece
                    if (divisor != 1) {
                        sum.divi(divisor);
                    }
                    view.set(new NDIndex("..."), sum);
                }
            }
        }
    }
}
