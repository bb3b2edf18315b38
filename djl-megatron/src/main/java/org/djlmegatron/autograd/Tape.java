package org.djlmegatron.autograd;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import java.util.ArrayList;
import java.util.List;

/**
 * A rank's autograd tape: the forward pass is a chain of segments separated by cuts, and
 * {@link #backward} runs libtorch's backward one segment at a time, latest first, applying each
 * cut's adjoints in between. DJL has no custom autograd functions and its GradientCollector is a
 * process-wide singleton, so collectives with a non-identity backward live here instead.
 *
 * <p>A cut must cross every live tensor that later code uses (the residual stream too, with
 * {@link Crossing#IDENTITY}); otherwise the earlier segment would be traversed once per cut. Only
 * the thread that owns the rank uses its tape.
 */
public final class Tape {

    private final List<Cut> cuts = new ArrayList<>();

    /** Whether operations are being recorded for a backward pass (libtorch grad mode is per thread). */
    public static boolean isRecording() {
        return JniUtils.isGradMode();
    }

    /**
     * Cuts the graph after {@code sources}: returns one new leaf per source whose value is the
     * crossing's forward. Without grad mode, just applies the forwards.
     */
    public NDList cut(NDList sources, List<Crossing> crossings) {
        if (sources.size() != crossings.size()) {
            throw new IllegalArgumentException(
                    sources.size() + " sources but " + crossings.size() + " crossings");
        }
        boolean record = isRecording() && anyRequiresGrad(sources);
        NDList leaves = new NDList(sources.size());
        for (int i = 0; i < sources.size(); i++) {
            NDArray x = sources.get(i);
            if (!record) {
                leaves.add(crossings.get(i).forward(x));
                continue;
            }
            NDArray leaf = crossings.get(i).forward(x.stopGradient());
            leaf.setRequiresGradient(true);
            leaves.add(leaf);
        }
        if (record) {
            cuts.add(new Cut(sources, leaves, List.copyOf(crossings)));
        }
        return leaves;
    }

    /** Cuts a single tensor. */
    public NDArray cut(NDArray source, Crossing crossing) {
        return cut(new NDList(source), List.of(crossing)).get(0);
    }

    /** Number of cuts recorded since the last backward. */
    public int size() {
        return cuts.size();
    }

    /** Forgets recorded cuts without running backward (e.g. an evaluation pass in grad mode). */
    public void clear() {
        cuts.clear();
    }

    /** Backward from a scalar loss through every recorded segment; gradients accumulate. */
    public void backward(NDArray loss) {
        try (NDArray ones = loss.onesLike()) {
            backward(loss, ones);
        }
    }

    /** Backward from {@code output} with upstream gradient {@code grad}. */
    public void backward(NDArray output, NDArray grad) {
        JniUtils.backward((PtNDArray) output, (PtNDArray) grad, false, false);
        for (int c = cuts.size() - 1; c >= 0; c--) {
            cuts.get(c).backward();
        }
        cuts.clear();
    }

    private static boolean anyRequiresGrad(NDList xs) {
        for (NDArray x : xs) {
            if (x.hasGradient()) {
                return true;
            }
        }
        return false;
    }

    /** One recorded cut: sources in the earlier segment, leaves that start the next one. */
    private record Cut(NDList sources, NDList leaves, List<Crossing> crossings) {

        /**
         * Applies the adjoints (every rank calls the same collectives in the same order), then one
         * libtorch backward into the earlier segment: with several sources, through the scalar
         * sum(source * grad), whose gradient with respect to each source is exactly its grad.
         */
        void backward() {
            List<NDArray> targets = new ArrayList<>();
            List<NDArray> grads = new ArrayList<>();
            for (int i = 0; i < sources.size(); i++) {
                NDArray g = crossings.get(i).adjoint(leaves.get(i).getGradient());
                if (sources.get(i).hasGradient()) {
                    targets.add(sources.get(i));
                    grads.add(g);
                }
            }
            if (targets.isEmpty()) {
                return;
            }
            if (targets.size() == 1) {
                JniUtils.backward((PtNDArray) targets.get(0), (PtNDArray) grads.get(0), false, false);
                return;
            }
            NDArray total = null;
            for (int i = 0; i < targets.size(); i++) {
                NDArray term = targets.get(i).mul(grads.get(i)).sum();
                total = total == null ? term : total.add(term);
            }
            try (NDArray one = total.onesLike()) {
                JniUtils.backward((PtNDArray) total, (PtNDArray) one, false, false);
            }
        }
    }
}
