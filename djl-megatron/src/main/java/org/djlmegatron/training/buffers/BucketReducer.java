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

/**
 * {@code --overlap-grad-reduce}: each bucket of a {@link ParamAndGradBuffer} is all-reduced over
 * the data-parallel group (and divided by its size) on the rank's {@link CommThread} as soon as
 * the last micro-batch's backward has finished every gradient in it, while backward goes on with
 * earlier layers. The tape reports finished parameters ({@code Tape.onGradientsFinal}, fed by the
 * model's {@code noteUse}s); buckets start strictly in order (bucket 0, the end of the buffer,
 * first), so that every rank issues the same collectives in the same order whatever order its
 * parameters are reported in. {@link #finish} starts what is left (parameters nobody reported)
 * and waits for all: the step calls it before it touches the gradients or the group again.
 *
 * <p>The per-bucket work is the non-overlapped step's: an all-reduce of the bucket of the fp32
 * gradient buffer, a division, so the results are bit-identical. With 16-bit weights the bucket's
 * last-micro-batch gradients are first widened and added into the fp32 main gradient (what the
 * step does for the earlier micro-batches, and without overlap for all of them). Under the
 * distributed optimizer the bucket is all-reduced too and the step reads its shard from the
 * result: a reduce-scatter per bucket would need Megatron's per-bucket shard layout, while this
 * step's shards are contiguous slices of the whole buffer (the checkpoints' optimizer layout); the
 * all-reduce moves up to twice the bytes of a reduce-scatter.
 */
public final class BucketReducer {

    private final ParamAndGradBuffer buffer;
    private final ProcessGroup group;
    private final int divisor;
    private final CommThread comm;
    private final Overlap overlap;
    private final BucketOffsets layout;
    /** Per parameter, the buckets it overlaps (a parameter may span several, a bucket hold several). */
    private final int[][] bucketsOf;
    private final int[] paramsIn;
    private final int[] remaining;
    private final boolean[] reported;
    private final List<PendingWork<Void>> pending = new ArrayList<>();
    private boolean armed;
    private int next;

    /** Reduces {@code buffer}'s fp32 gradients over {@code group}, divided by {@code divisor}. */
    public BucketReducer(ParamAndGradBuffer buffer, ProcessGroup group, int divisor,
            CommThread comm, Overlap overlap) {
        this.buffer = buffer;
        this.group = group;
        this.divisor = divisor;
        this.comm = comm;
        this.overlap = overlap;
        layout = new BucketOffsets(buffer.parameters());
        List<long[]> buckets = buffer.buckets();
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
    }

    /** Before the last micro-batch's backward: from now on, finished buckets start their reduction. */
    public void arm() {
        System.arraycopy(paramsIn, 0, remaining, 0, paramsIn.length);
        Arrays.fill(reported, false);
        next = 0;
        pending.clear();
        armed = true;
        startReadyBuckets(); // buckets of padding only
    }

    /** The tape's gradient-final listener (the compute thread, during backward). */
    public void gradientsFinal(List<Object> done) {
        if (!armed) {
            return; // an earlier micro-batch: its gradients are not the step's yet
        }
        for (Object o : done) {
            int p = layout.indexOf(o);
            if (p < 0 || reported[p]) {
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
            arm();
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
        String what = "overlapped gradient all-reduce of bucket " + b + " of " + remaining.length + " (elements "
                + range[0] + ".." + range[1] + ") on " + group.name();
        pending.add(comm.submit(what, overlap.waitLimit(), () -> {
            buffer.accumulateIntoMain(range[0], range[1]); // 16-bit weights: the last micro-batch's gradients
            reduce(range[0], range[1]);
            return null;
        }));
    }

    /** The communication thread's part: the non-overlapped step's work on one bucket. */
    private void reduce(long start, long end) {
        NDIndex slice = new NDIndex("{}:{}", start, end);
        try (NDArray view = buffer.mainGrads().get(slice)) {
            try (NDArray sum = group.allReduce(view, ReduceOp.SUM)) {
                sum.divi(divisor);
                view.set(new NDIndex("..."), sum);
            }
        }
    }
}
