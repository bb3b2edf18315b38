package org.djlmegatron.autograd;

import ai.djl.engine.EngineException;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import java.util.ArrayDeque;
import org.djlmegatron.engine.Cast;
import java.util.ArrayList;
import java.util.Deque;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * One forward pass's autograd record (one micro-batch of one model chunk): the forward is a chain
 * of segments separated by <em>entries</em>, and {@link #backward} runs libtorch's backward one
 * segment at a time, latest first, letting each entry turn the gradients of its outputs into the
 * gradients of its inputs in between. DJL has no custom autograd functions and its
 * GradientCollector is a process-wide singleton, so everything with a backward of its own lives
 * here:
 * <ul>
 *   <li>{@link #cut}: per-tensor {@link Crossing}s (Megatron's tensor-parallel region mappings);
 *   <li>{@link #function}: any multi-tensor operation with its own adjoint (all-to-all, ring
 *       exchange, send/recv);
 *   <li>{@link #checkpoint}: activation recomputation, a segment run without grad whose backward
 *       re-runs it with grad on a nested tape;
 *   <li>{@link #addLoss}: extra backward roots (auxiliary losses), scaled like the main loss.
 * </ul>
 *
 * <p>The contract: an entry must take every live tensor that later code uses as an input,
 * otherwise the earlier segment would be traversed twice. Tensors that only pass by (the residual
 * stream) are {@link #carry carried}: every entry recorded while they are carried crosses them
 * unchanged and replaces them in the caller's list. With {@code -Ddjlm.tape.debug=true} (or
 * {@link #setDebug}) backward checks after every segment that no earlier entry's output received a
 * gradient out of turn, and names the entry it belongs to.
 *
 * <p>Entries are recorded whenever libtorch's grad mode is on (per thread); without it they only
 * apply their forward. A rank can keep several tapes alive (micro-batches in flight); its
 * {@code RankContext} hands out the current one. Only the rank's thread uses a tape.
 */
public final class Tape {

    /** Gradients of an entry's outputs to gradients of its inputs (same order, same shapes). */
    @FunctionalInterface
    public interface Adjoint {
        NDList apply(NDList outputGradients);
    }

    private static final boolean DEBUG_DEFAULT = Boolean.getBoolean("djlm.tape.debug");

    private final List<Entry> entries = new ArrayList<>();
    private final List<Root> roots = new ArrayList<>();
    private final Deque<NDList> carried = new ArrayDeque<>();
    private final Map<Object, Integer> firstUse = new IdentityHashMap<>();
    private final List<Consumer<List<Object>>> gradientListeners = new ArrayList<>();
    /** Every parameter noted in each segment (not only the first use), for {@link #beforeSegmentBackward}. */
    private final Map<Integer, List<Object>> segmentUses = new java.util.HashMap<>();
    private final List<Consumer<List<Object>>> beforeSegmentListeners = new ArrayList<>();
    private final List<Consumer<Object>> useListeners = new ArrayList<>();
    private RandomKey key;
    private boolean debug = DEBUG_DEFAULT;
    private Tape nested; // the recompute tape while a checkpoint re-runs its segment
    private int checkpointForwards; // > 0 while a checkpoint runs its segment without grad
    private NDArray rootScale;

    /** Whether operations are being recorded for a backward pass (libtorch grad mode is per thread). */
    public static boolean isRecording() {
        return JniUtils.isGradMode();
    }

    // ------------------------------------------------------------------ recording

    /**
     * Cuts the graph after {@code sources}: returns one new leaf per source whose value is the
     * crossing's forward (carried tensors are crossed too). Without grad mode, applies the forwards.
     */
    public NDList cut(NDList sources, List<Crossing> crossings) {
        Tape t = active();
        if (t != this) {
            return t.cut(sources, crossings);
        }
        if (sources.size() != crossings.size()) {
            throw new IllegalArgumentException(sources.size() + " sources but " + crossings.size() + " crossings");
        }
        return function(sources, in -> {
            NDList out = new NDList(in.size());
            for (int i = 0; i < in.size(); i++) {
                out.add(crossings.get(i).forward(in.get(i)));
            }
            return out;
        }, grads -> {
            NDList out = new NDList(grads.size());
            for (int i = 0; i < grads.size(); i++) {
                out.add(crossings.get(i).adjoint(grads.get(i)));
            }
            return out;
        });
    }

    /** Cuts a single tensor. */
    public NDArray cut(NDArray source, Crossing crossing) {
        return cut(new NDList(source), List.of(crossing)).get(0);
    }

    /**
     * A general cut: {@code forward} maps the (detached) inputs to outputs, each of which becomes a
     * leaf of the next segment; in backward, {@code adjoint} maps the outputs' gradients to the
     * inputs' gradients. Every rank must call collectives in the same order in both.
     */
    public NDList function(NDList inputs, Function<NDList, NDList> forward, Adjoint adjoint) {
        Tape t = active();
        if (t != this) {
            return t.function(inputs, forward, adjoint);
        }
        if (!isRecording()) {
            return forward.apply(inputs);
        }
        int own = inputs.size();
        NDList sources = withCarried(inputs);
        NDList detached = new NDList(sources.size());
        for (NDArray s : sources) {
            detached.add(s.stopGradient());
        }
        NDList outputs = forward.apply(detached.subNDList(0, own));
        NDList leaves = leavesOf(outputs, detached.subList(own, detached.size()));
        Adjoint withPassThrough = grads -> {
            NDList in = adjoint.apply(grads.subNDList(0, outputs.size()));
            NDList all = new NDList(in);
            all.addAll(grads.subList(outputs.size(), grads.size()));
            return all;
        };
        entries.add(new FunctionEntry(sources, leaves, withPassThrough, site()));
        return replaceCarried(leaves, outputs.size());
    }

    /**
     * Activation recomputation: runs {@code fn} on {@code inputs} without keeping anything for
     * backward but the inputs; backward re-runs {@code fn} with grad on a nested tape (the same
     * {@link RandomKey}, so the same dropout masks), back-propagates through it and continues into
     * the earlier segment. {@code fn} must be deterministic and call collectives in the same order
     * each time. Its temporaries live in a scratch manager freed when it returns.
     *
     * <p>Gradients come out bit-identical to running {@code fn} plainly when every tensor entering
     * the checkpoint receives at most two gradient contributions in total (one from inside, one from
     * later code): float addition commutes but does not associate, and the recompute sums the inside
     * contributions before the outside one is added. A transformer layer's input is used twice (its
     * norm and the residual), which is why every recomputation mode reproduces a run exactly.
     */
    public NDList checkpoint(NDList inputs, Function<NDList, NDList> fn) {
        Tape t = active();
        if (t != this) {
            return t.checkpoint(inputs, fn);
        }
        if (!isRecording()) {
            return fn.apply(inputs);
        }
        int own = inputs.size();
        NDList sources = withCarried(inputs);
        NDManager home = sources.get(0).getManager();
        NDList leaves;
        JniUtils.setGradMode(false);
        checkpointForwards++;
        try (NDManager scratch = home.newSubManager()) {
            NDList detached = detachInto(sources, scratch, false);
            NDList outputs = fn.apply(detached.subNDList(0, own));
            leaves = leavesOf(outputs, detached.subList(own, detached.size()));
            for (NDArray leaf : leaves) {
                leaf.attach(home);
            }
        } finally {
            checkpointForwards--;
            JniUtils.setGradMode(true);
        }
        int produced = leaves.size() - (sources.size() - own);
        entries.add(new CheckpointEntry(sources, leaves, own, fn, site()));
        return replaceCarried(leaves, produced);
    }

    /** Checkpoints a one-tensor function. */
    public NDArray checkpoint(NDArray input, Function<NDArray, NDArray> fn) {
        return checkpoint(new NDList(input), in -> new NDList(fn.apply(in.get(0)))).get(0);
    }

    /**
     * While the returned scope is open, every entry recorded on this tape also crosses the tensors
     * of {@code live} (unchanged) and replaces them in {@code live} with its leaves.
     */
    public Carry carry(NDList live) {
        Tape t = active();
        t.carried.push(live);
        return () -> {
            if (t.carried.peek() != live) {
                throw new TapeException("carry scopes closed out of order");
            }
            t.carried.pop();
        };
    }

    /** A {@link #carry} scope. */
    public interface Carry extends AutoCloseable {
        @Override
        void close();
    }

    /**
     * An extra backward root: {@code loss} (a scalar of this segment) is back-propagated with the
     * upstream gradient the main loss got (the loss scale over the micro-batch count), at the
     * point where backward passes the segment it was computed in.
     */
    public void addLoss(NDArray loss) {
        Tape t = active();
        if (t != this) {
            t.addLoss(loss);
            return;
        }
        if (isRecording()) {
            roots.add(new Root(entries.size(), loss));
        }
    }

    /** Records that {@code parameter} took part in the current segment (for gradient-ready hooks). */
    public void noteUse(Object parameter) {
        for (Consumer<Object> l : useListeners) {
            l.accept(parameter);
        }
        if (nested == null && (isRecording() || checkpointForwards > 0)) {
            firstUse.putIfAbsent(parameter, entries.size());
            if (!beforeSegmentListeners.isEmpty()) {
                List<Object> uses = segmentUses.computeIfAbsent(entries.size(), k -> new ArrayList<>());
                if (uses.stream().noneMatch(u -> u == parameter)) {
                    uses.add(parameter);
                }
            }
        }
    }

    /**
     * Called during {@link #backward} with the parameters (as passed to {@link #noteUse}) whose
     * gradients this backward has finished, as soon as backward has passed the earliest segment
     * that used them; listeners stay registered across backward passes.
     */
    public void onGradientsFinal(Consumer<List<Object>> listener) {
        gradientListeners.add(listener);
    }

    /**
     * Called during {@link #backward} just before each segment's backward (before a checkpointed
     * segment's recomputation) with every parameter that segment may read: those noted in it
     * ({@link #noteUse}) and those noted in the last earlier segment with notes (a block's cuts
     * split it over segments; possibly empty): ZeRO-3 gathers those parameters there and frees the others. Listeners stay
     * registered across backward passes.
     */
    public void beforeSegmentBackward(Consumer<List<Object>> listener) {
        beforeSegmentListeners.add(listener);
    }

    /**
     * Called at every {@link #noteUse}, before the parameter is used, whether or not the pass
     * records (evaluation too): an overlapped parameter all-gather waits there for the bucket that
     * holds the parameter. Listeners stay registered.
     */
    public void onUse(Consumer<Object> listener) {
        useListeners.add(listener);
    }

    /** The micro-batch's randomness key, or null when nothing is random (evaluation, inference). */
    public RandomKey key() {
        return active().key;
    }

    /** Sets the randomness key (training) or clears it (null). */
    public void setKey(RandomKey key) {
        this.key = key;
    }

    /** Checks, after every backward segment, that no tensor skipped a cut (slower; for tests). */
    public void setDebug(boolean debug) {
        this.debug = debug;
    }

    /** Number of entries recorded since the last backward. */
    public int size() {
        return entries.size();
    }

    /** Forgets what was recorded without running backward (e.g. an evaluation pass in grad mode). */
    public void clear() {
        entries.clear();
        roots.clear();
        firstUse.clear();
        segmentUses.clear();
        rootScale = null;
    }

    // ------------------------------------------------------------------ backward

    /** Backward from a scalar loss through every recorded segment; gradients accumulate. */
    public void backward(NDArray loss) {
        try (NDArray ones = loss.onesLike()) {
            backward(loss, ones);
        }
    }

    /** Backward from {@code output} with upstream gradient {@code grad}. */
    public void backward(NDArray output, NDArray grad) {
        backward(new NDList(output), new NDList(grad));
    }

    /**
     * Backward from a non-last pipeline stage's {@code output} with the gradient the next stage
     * sent; the extra roots ({@link #addLoss}, e.g. MoE balancing losses) get {@code lossScale},
     * the upstream gradient the main loss gets on the last stage (loss scale over micro-batches).
     */
    public void backward(NDArray output, NDArray grad, NDArray lossScale) {
        rootScale = lossScale;
        backward(new NDList(output), new NDList(grad));
    }

    /** Backward from several outputs at once (the recompute of a checkpoint ends with its outputs). */
    public void backward(NDList outputs, NDList grads) {
        if (outputs.size() == 1 && grads.get(0).getShape().isScalar()) {
            rootScale = grads.get(0);
        }
        try {
            notifyBefore(entries.size());
            runSegment(entries.size(), outputs, grads);
            for (int e = entries.size() - 1; e >= 0; e--) {
                Entry entry = entries.get(e);
                notifyBefore(e); // before sourceGradients: a checkpoint recomputes segment e there
                NDList sourceGrads = entry.sourceGradients(leafGradients(entry));
                checkShapes(entry, sourceGrads);
                runSegment(e, entry.sources, sourceGrads);
            }
        } finally {
            clear();
        }
    }

    private NDList leafGradients(Entry entry) {
        NDList grads = new NDList(entry.leaves.size());
        for (NDArray leaf : entry.leaves) {
            grads.add(leaf.getGradient()); // zeros where nothing later used the leaf
        }
        return grads;
    }

    /**
     * One libtorch backward through segment {@code s} from {@code outputs} (with their gradients)
     * and the extra roots recorded in it, through the scalar sum(output * grad) + sum(root * scale),
     * whose gradient with respect to each output is exactly its grad. An output outside the graph
     * (everything before it frozen) adds nothing; a zero-weighted anchor leaf keeps the scalar in the
     * graph even then (DJL cannot tell whether a non-leaf tensor requires grad).
     */
    private void runSegment(int s, NDList outputs, NDList grads) {
        NDManager m = outputs.get(0).getManager();
        try (NDManager tmp = m.newSubManager()) {
            NDArray anchor = tmp.zeros(new Shape(), DataType.FLOAT32);
            anchor.setRequiresGradient(true);
            NDArray total = anchor.mul(anchor);
            for (int i = 0; i < outputs.size(); i++) {
                total = total.add(Cast.to(outputs.get(i).mul(grads.get(i)).sum(), DataType.FLOAT32));
            }
            for (Root r : roots) {
                if (r.segment == s) {
                    NDArray scaled = rootScale == null ? r.loss : r.loss.mul(rootScale.toType(r.loss.getDataType(), false));
                    total = total.add(Cast.to(scaled, DataType.FLOAT32));
                }
            }
            run(s, total, total.onesLike());
        }
        if (debug) {
            checkNoEarlyGradients(s);
        }
        notifyFinal(s);
    }

    private void run(int s, NDArray output, NDArray grad) {
        try {
            JniUtils.backward((PtNDArray) output, (PtNDArray) grad, false, false);
        } catch (EngineException e) {
            throw new TapeException("backward through segment " + s + " of " + (entries.size() + 1)
                    + (s > 0 ? " (after the entry recorded at " + entries.get(s - 1).site + ")" : "")
                    + " failed; a tensor that skipped a cut is the usual cause: rerun with "
                    + "-Ddjlm.tape.debug=true to name it", e);
        }
    }

    private void checkShapes(Entry entry, NDList sourceGrads) {
        if (sourceGrads.size() != entry.sources.size()) {
            throw new TapeException("the entry recorded at " + entry.site + " returned " + sourceGrads.size()
                    + " gradients for " + entry.sources.size() + " inputs");
        }
        for (int i = 0; i < sourceGrads.size(); i++) {
            if (!sourceGrads.get(i).getShape().equals(entry.sources.get(i).getShape())) {
                throw new TapeException("the entry recorded at " + entry.site + ": gradient " + i + " has shape "
                        + sourceGrads.get(i).getShape() + ", its input " + entry.sources.get(i).getShape());
            }
        }
    }

    /**
     * After segment {@code s}, gradients may only have reached the outputs of entry s-1 (the
     * segment's start). An output of an earlier entry with a gradient was used past a later
     * entry without crossing it.
     */
    private void checkNoEarlyGradients(int s) {
        for (int e = 0; e < s - 1; e++) {
            Entry entry = entries.get(e);
            for (int i = 0; i < entry.leaves.size(); i++) {
                if (JniUtils.getGradient((PtNDArray) entry.leaves.get(i)) != null) {
                    throw new TapeException("output " + i + " of the entry recorded at " + entry.site
                            + " reached backward from segment " + s + " (after the entry recorded at "
                            + entries.get(s - 1).site + ") without crossing the entries in between: pass it "
                            + "to them, or carry it (Tape.carry)");
                }
            }
        }
    }

    /**
     * Tells the listeners what segment {@code s} may read: the parameters noted in it and those of
     * the last earlier segment with notes (a block notes its parameters once, before it runs, and
     * its cuts, e.g. tensor-parallel regions, split it over several segments).
     */
    private void notifyBefore(int s) {
        if (beforeSegmentListeners.isEmpty()) {
            return;
        }
        List<Object> uses = new ArrayList<>(segmentUses.getOrDefault(s, List.of()));
        for (int p = s - 1; p >= 0; p--) {
            List<Object> earlier = segmentUses.get(p);
            if (earlier != null) {
                uses.addAll(earlier);
                break;
            }
        }
        beforeSegmentListeners.forEach(l -> l.accept(uses));
    }

    private void notifyFinal(int s) {
        if (gradientListeners.isEmpty()) {
            return;
        }
        List<Object> done = new ArrayList<>();
        firstUse.forEach((p, first) -> {
            if (first == s) {
                done.add(p);
            }
        });
        if (!done.isEmpty()) {
            gradientListeners.forEach(l -> l.accept(done));
        }
    }

    // ------------------------------------------------------------------ internals

    private Tape active() {
        Tape t = this;
        while (t.nested != null) {
            t = t.nested;
        }
        return t;
    }

    /** {@code inputs} followed by every carried tensor (innermost scope last). */
    private NDList withCarried(NDList inputs) {
        NDList all = new NDList(inputs);
        List<NDList> scopes = new ArrayList<>(carried);
        for (int i = scopes.size() - 1; i >= 0; i--) {
            all.addAll(scopes.get(i));
        }
        return all;
    }

    /** Writes the carried tensors' leaves (after the first {@code produced}) back into their lists. */
    private NDList replaceCarried(NDList leaves, int produced) {
        List<NDList> scopes = new ArrayList<>(carried);
        int k = produced;
        for (int i = scopes.size() - 1; i >= 0; i--) {
            NDList live = scopes.get(i);
            for (int j = 0; j < live.size(); j++) {
                live.set(j, leaves.get(k++));
            }
        }
        return leaves.subNDList(0, produced);
    }

    /** New leaves for the outputs and the passed-through tensors. */
    private static NDList leavesOf(NDList outputs, List<NDArray> passThrough) {
        NDList leaves = new NDList(outputs.size() + passThrough.size());
        for (NDArray o : outputs) {
            leaves.add(leaf(o));
        }
        for (NDArray p : passThrough) {
            leaves.add(leaf(p));
        }
        return leaves;
    }

    /** Detached views of {@code sources} owned by {@code scratch} (leaves when {@code grad}). */
    private static NDList detachInto(NDList sources, NDManager scratch, boolean grad) {
        NDList out = new NDList(sources.size());
        for (NDArray s : sources) {
            NDArray d = s.stopGradient();
            d.attach(scratch);
            if (grad) {
                d.setRequiresGradient(true);
            }
            out.add(d);
        }
        return out;
    }

    private static NDArray leaf(NDArray value) {
        NDArray leaf = value.stopGradient();
        leaf.setRequiresGradient(true);
        return leaf;
    }

    /** The first caller outside the tape: where an entry was recorded, for messages. */
    private static String site() {
        return StackWalker.getInstance().walk(frames -> frames
                .filter(f -> !f.getClassName().equals(Tape.class.getName())
                        && !f.getClassName().startsWith(Tape.class.getName() + "$"))
                .findFirst()
                .map(f -> f.getClassName().substring(f.getClassName().lastIndexOf('.') + 1) + "."
                        + f.getMethodName() + ":" + f.getLineNumber())
                .orElse("?"));
    }

    private record Root(int segment, NDArray loss) {}

    /** A recorded entry: inputs in the earlier segment, leaves that start the next one. */
    private abstract static class Entry {
        final NDList sources;
        final NDList leaves;
        final String site;

        Entry(NDList sources, NDList leaves, String site) {
            this.sources = sources;
            this.leaves = leaves;
            this.site = site;
        }

        abstract NDList sourceGradients(NDList leafGradients);
    }

    private static final class FunctionEntry extends Entry {
        private final Adjoint adjoint;

        FunctionEntry(NDList sources, NDList leaves, Adjoint adjoint, String site) {
            super(sources, leaves, site);
            this.adjoint = adjoint;
        }

        @Override
        NDList sourceGradients(NDList leafGradients) {
            return adjoint.apply(leafGradients);
        }
    }

    /** A checkpointed segment: re-run with grad on a nested tape, then back-propagated through. */
    private final class CheckpointEntry extends Entry {
        private final int own;
        private final Function<NDList, NDList> fn;

        CheckpointEntry(NDList sources, NDList leaves, int own, Function<NDList, NDList> fn, String site) {
            super(sources, leaves, site);
            this.own = own;
            this.fn = fn;
        }

        @Override
        NDList sourceGradients(NDList leafGradients) {
            NDManager home = sources.get(0).getManager();
            NDList grads = new NDList(sources.size());
            try (NDManager scratch = home.newSubManager()) {
                NDList fresh = detachInto(sources, scratch, true);
                Tape inner = new Tape();
                inner.key = key;
                inner.debug = debug;
                inner.rootScale = rootScale;
                nested = inner;
                try { // nested stays set through inner's backward: its own checkpoints record on it
                    NDList outputs = new NDList(fn.apply(fresh.subNDList(0, own)));
                    outputs.addAll(fresh.subList(own, fresh.size())); // carried tensors pass through
                    inner.backward(outputs, leafGradients);
                } finally {
                    nested = null;
                }
                for (NDArray f : fresh) {
                    NDArray g = f.getGradient();
                    g.attach(home);
                    grads.add(g);
                }
            }
            return grads;
        }
    }
}
