package org.djlmegatron.autograd;

import ai.djl.engine.EngineException;
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
 * the thread that owns the rank uses its tape. Cuts are recorded whenever libtorch's grad mode is
 * on; the gradient of a cut's leaf reaches its source only if the source is in the graph.
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
        boolean record = isRecording();
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

    /** One recorded cut: sources in the earlier segment, leaves that start the next one. */
    private record Cut(NDList sources, NDList leaves, List<Crossing> crossings) {

        /**
         * Applies the adjoints (every rank calls the same collectives in the same order), then one
         * libtorch backward into the earlier segment: with several sources, through the scalar
         * sum(source * grad), whose gradient with respect to each source is exactly its grad.
         */
        void backward() {
            NDArray total = null;
            for (int i = 0; i < sources.size(); i++) {
                NDArray g = crossings.get(i).adjoint(leaves.get(i).getGradient());
                if (sources.size() == 1) {
                    runBackward(sources.get(0), g);
                    return;
                }
                NDArray term = sources.get(i).mul(g).sum();
                total = total == null ? term : total.add(term);
            }
            try (NDArray one = total.onesLike()) {
                runBackward(total, one);
            }
        }

        /**
         * libtorch backward into the earlier segment. A source outside the graph (everything before
         * it frozen) has nothing to receive gradients; libtorch says so and we stop there.
         * (DJL's requiresGrad is unreliable for non-leaf tensors, so we cannot ask beforehand.)
         */
        private static void runBackward(NDArray output, NDArray grad) {
            try {
                JniUtils.backward((PtNDArray) output, (PtNDArray) grad, false, false);
            } catch (EngineException e) {
                if (!String.valueOf(e.getMessage()).contains("does not require grad")) {
                    throw e;
                }
            }
        }
    }
}
