package org.djlmegatron.training.buffers;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Predicate;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.djlmegatron.autograd.Tape;
import org.djlmegatron.comm.CommThread;
import org.djlmegatron.comm.PendingWork;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.engine.TorchNative;
import org.djlmegatron.training.model.TrainableParameter;

/**
 * ZeRO-3 ({@code --data-parallel-sharding-strategy optim_grads_params}, Megatron-FSDP's
 * {@code optim_grads_params}): between steps this rank keeps only its 1/DP shard of every weight.
 *
 * <p>Layout: the parameters are cut into <em>units</em> (one per transformer layer, named
 * {@code ...layers.N.}; the parameters around them, e.g. the embedding, the final norm, the output
 * layer, grouped by their first name component), because a storage can only be freed whole. Each
 * unit's parameters are views into a storage of its own, padded to a multiple of DP and sharded on
 * its own: rank r keeps elements {@code [r * p/DP, (r+1) * p/DP)} of it. This rank's weights are the
 * concatenation of its unit shards ({@link #shards()}): the order of the optimizer's masters,
 * which differs from the other strategies' flat model-order vector.
 *
 * <p>A unit is all-gathered into its storage at the first use of one of its parameters in a
 * forward ({@code Tape.onUse}; a forward frees the units before it) and again just before each
 * backward segment that uses it ({@code Tape.beforeSegmentBackward}, which frees the others). Freed
 * means the storage resized to 0 bytes while libtorch's autograd still holds the parameter
 * tensors; the gathered values are written through the unit's buffer tensor, an alias of the
 * storage, so the parameters' version counters do not move. The tied embedding is gathered for
 * each end. Gradients as under ZeRO-2: a full-size workspace per micro-batch, reduce-scattered unit
 * by unit into this rank's fp32 shard after its backward.
 *
 * <p>Overlap ({@link Overlap}, Megatron-FSDP's): with {@code --overlap-grad-reduce} every
 * collective of this class runs on the rank's {@link CommThread} (one sequence for the
 * data-parallel group), and a unit's reduce-scatter starts as soon as backward has finished its
 * gradients ({@link UnitReducer}). With {@code --overlap-param-gather} the next unit's all-gather
 * is started while the current one computes: in a training forward unit u+1's when u is entered,
 * before a backward segment the unit below the lowest layer backward has reached; its first use
 * waits for it. At most one unit is held beyond the units the passes hold without the overlap.
 * The storage is resized on the compute thread before the gather is handed over, and freed only
 * after the gather was waited for.
 *
 * <p>Tensor-parallel completion ({@link TrainableParameter#tpPartialGradient()}): after the
 * data-parallel reduction, on this rank's fp32 shard ({@link #completeTensorParallel}), Megatron's
 * order; the model's own {@code reduceTensorParallelGradients} is not called under ZeRO-3.
 *
 * <p>Expert parallelism (Megatron-FSDP's second mesh): given an expert-data group, the expert
 * parameters ({@link TrainableParameter#expert()}) form units of their own (a MoE layer's experts
 * beside its dense unit), padded to a multiple of that group's size and sharded, gathered and
 * reduce-scattered over it; the dense units over the data x context group. This rank's shards
 * hold every dense unit's shard first, then every expert unit's ({@link #denseShardSize()}), the
 * order of the distributed optimizer's masters under expert parallelism (dense, then experts).
 *
 * <p>Needs the project's native library ({@link TorchNative#resizeStorage}).
 */
public final class ParameterShards implements AutoCloseable {

    private static final Pattern LAYER = Pattern.compile("^(.*?\\.layers\\.\\d+)\\.");

    private final List<TrainableParameter> params;
    private final List<Unit> units = new ArrayList<>();
    /** Per parameter: its unit and its element offset in the concatenation of the padded units. */
    private final int[] unitOf;
    private final Map<NDArray, Integer> index = new IdentityHashMap<>();
    private final long[] fullOffset;
    private final ProcessGroup dp;
    /** The expert units' group (expert-data parallel); {@link #dp} without expert parallelism. */
    private final ProcessGroup expertDp;
    private final NDManager manager;
    private final DataType type;
    private final long fullSize;
    private final long shardSize;
    /** Elements of this rank's dense unit shards, which come first in {@link #shards}. */
    private long denseShardSize;
    /** This rank's weights: the concatenation of its unit shards, in the weights' dtype. */
    private final NDArray shards;
    /** This rank's fp32 main-gradient shard (same layout as {@link #shards}). */
    private final NDArray gradShard;
    private NDManager workspace;
    private NDArray grads;
    private boolean closed;
    private final Overlap overlap;
    /** The rank's communication thread under overlap; null: every collective on the calling thread. */
    private final CommThread comm;
    /** Under {@code --overlap-grad-reduce}: starts units' reduce-scatters during backward; null otherwise. */
    private final UnitReducer reducer;
    /** The unit whose gather was started ahead of its use ({@code --overlap-param-gather}); -1: none. */
    private int prefetched = -1;
    /** The highest unit a training forward has entered since the units were last all freed. */
    private int forwardHigh = -1;
    /** The lowest layer unit the current backward has needed (the last layer unit + 1 before its first). */
    private int backwardLow;
    private long waitedNanos;

    /** One FSDP unit: a run of consecutive parameters with a storage of their own, sharded over {@link #group}. */
    private static final class Unit {
        final String name;
        /** The layer prefix (or first name component): a MoE layer's dense and expert units share it. */
        final String key;
        final boolean layer;
        final boolean expert;
        final ProcessGroup group;
        final int first;
        final int end;
        final long padded;
        final long fullStart;
        /** Where this rank's piece lies in {@link #shards}: dense units first, then expert units. */
        long shardStart;
        NDArray storage;
        boolean gathered = true;
        /** The all-gather on the communication thread that fills {@link #storage}, until waited for. */
        PendingWork<?> gathering;

        Unit(String key, boolean expert, ProcessGroup group, int first, int end, long padded, long fullStart) {
            this.name = expert ? key + " (experts)" : key;
            this.key = key;
            this.layer = LAYER.matcher(key + ".").find();
            this.expert = expert;
            this.group = group;
            this.first = first;
            this.end = end;
            this.padded = padded;
            this.fullStart = fullStart;
        }

        /** Elements of each rank's piece. */
        long piece() {
            return padded / group.size();
        }
    }

    /** Without overlap: every gather and reduce-scatter on the compute thread, when the passes need it. */
    public ParameterShards(List<TrainableParameter> params, ProcessGroup dp, Tape tape, NDManager parent) {
        this(params, dp, tape, parent, Overlap.OFF);
    }

    /** Without expert parallelism: every unit over {@code dp}. */
    public ParameterShards(List<TrainableParameter> params, ProcessGroup dp, Tape tape, NDManager parent,
            Overlap overlap) {
        this(params, dp, null, tape, parent, overlap);
    }

    /**
     * Moves the parameters into one storage per unit, keeps this rank's shard of each and frees the
     * storages; registers the gather/free hooks on {@code tape} (and, under {@code overlap}, the
     * gradient-final hook that starts the units' reduce-scatters).
     *
     * @param expertDp under expert parallelism the expert-data group, over which the expert
     *     parameters get units of their own; null: every parameter is dense
     */
    public ParameterShards(List<TrainableParameter> params, ProcessGroup dp, ProcessGroup expertDp, Tape tape,
            NDManager parent, Overlap overlap) {
        if (!ParamAndGradBuffer.supports(params)) {
            throw new IllegalArgumentException("--data-parallel-sharding-strategy optim_grads_params needs the native "
                    + "library and one weight dtype (fp32, bf16 or fp16) and device");
        }
        this.params = List.copyOf(params);
        this.dp = dp;
        this.expertDp = expertDp == null ? dp : expertDp;
        type = params.get(0).array().getDataType();
        manager = parent.newSubManager(params.get(0).array().getDevice());
        unitOf = new int[params.size()];
        fullOffset = new long[params.size()];
        cutUnits(expertDp != null);
        for (int i = 0; i < params.size(); i++) {
            index.put(params.get(i).array(), i);
        }
        Unit last = units.get(units.size() - 1);
        fullSize = last.fullStart + last.padded;
        shardSize = placeShards();
        shards = manager.zeros(new Shape(shardSize), type);
        gradShard = manager.zeros(new Shape(shardSize), DataType.FLOAT32);
        for (Unit u : units) {
            u.storage = manager.zeros(new Shape(u.padded), type);
            for (int i = u.first; i < u.end; i++) {
                TorchNative.bindToBuffer(params.get(i).array(), u.storage, fullOffset[i] - u.fullStart);
            }
            long piece = u.piece();
            try (NDArray mine = u.storage.get(new NDIndex("{}:{}", piece * u.group.rank(), piece * (u.group.rank() + 1)))) {
                shards.set(new NDIndex("{}:{}", u.shardStart, u.shardStart + piece), mine);
            }
        }
        params.forEach(p -> TorchNative.dropGradient(p.array())); // no .grad left from an earlier backward
        this.overlap = overlap;
        boolean overlapped = overlap.gradReduce() && dp.size() > 1;
        comm = overlapped ? new CommThread(dp.name() + "-rank-" + dp.rank() + "-comm") : null;
        reducer = overlapped ? new UnitReducer(unitOf, units.size(), this::startReduce) : null;
        releaseAll();
        tape.onUse(this::beforeForwardUse);
        tape.beforeSegmentBackward(this::beforeBackwardSegment);
        if (reducer != null) {
            tape.onGradientsFinal(this::gradientsFinal);
        }
    }

    /**
     * Units: consecutive parameters with the same layer prefix (or first name component) and, with
     * {@code splitExperts}, on the same side of the dense/expert divide.
     */
    private void cutUnits(boolean splitExperts) {
        long full = 0;
        int start = 0;
        for (int i = 0; i <= params.size(); i++) {
            if (i < params.size() && (i == start || sameUnit(params.get(i), params.get(start), splitExperts))) {
                continue;
            }
            long size = 0;
            for (int j = start; j < i; j++) {
                unitOf[j] = units.size();
                fullOffset[j] = full + size;
                size += params.get(j).array().getShape().size();
            }
            boolean expert = splitExperts && params.get(start).expert();
            ProcessGroup group = expert ? expertDp : dp;
            int n = group.size();
            long padded = Math.max(n, (size + n - 1) / n * n);
            units.add(new Unit(unitName(params.get(start)), expert, group, start, i, padded, full));
            full += padded;
            start = i;
            if (i == params.size()) {
                break;
            }
            i--; // parameter i starts the next unit
        }
    }

    private static boolean sameUnit(TrainableParameter a, TrainableParameter b, boolean splitExperts) {
        return unitName(a).equals(unitName(b)) && (!splitExperts || a.expert() == b.expert());
    }

    /** Places this rank's unit pieces in {@link #shards}: the dense units' first, then the expert units'; returns the total. */
    private long placeShards() {
        long at = 0;
        for (boolean expert : new boolean[] {false, true}) {
            for (Unit u : units) {
                if (u.expert == expert) {
                    u.shardStart = at;
                    at += u.piece();
                }
            }
            if (!expert) {
                denseShardSize = at;
            }
        }
        return at;
    }

    private static String unitName(TrainableParameter p) {
        Matcher m = LAYER.matcher(p.name());
        if (m.find()) {
            return m.group(1);
        }
        int dot = p.name().indexOf('.');
        return dot < 0 ? p.name() : p.name().substring(0, dot);
    }

    // ------------------------------------------------------------------ gather and free

    /**
     * Forward: gathers the used parameter's unit when it enters it (freed, or gathered ahead); a
     * layer frees every unit of the layers before it, not its own other units (a MoE layer's dense
     * and expert units); the units after the last layer, the final norm, the output layer and the
     * tied embedding, run together in the head and stay gathered until backward's first segment
     * frees what it does not use. A training forward at its furthest unit starts
     * the next unit's gather ({@code --overlap-param-gather}).
     */
    private void beforeForwardUse(Object reported) {
        int u = unitOfReported(reported);
        if (closed || u < 0 || units.get(u).gathered && u != prefetched) {
            return;
        }
        if (units.get(u).layer) {
            for (int v = 0; v < u; v++) {
                if (!units.get(v).key.equals(units.get(u).key)) {
                    release(units.get(v));
                }
            }
        }
        if (u == prefetched) {
            prefetched = -1;
        }
        gather(units.get(u));
        if (prefetching() && u >= forwardHigh && u + 1 < units.size()) {
            prefetch(u + 1);
        }
        forwardHigh = Math.max(forwardHigh, u);
    }

    /**
     * Backward: gathers the units the segment uses, frees every other but the one gathered ahead
     * for the next segment ({@code --overlap-param-gather}: the unit below the lowest layer reached).
     */
    private void beforeBackwardSegment(List<Object> used) {
        if (closed) {
            return;
        }
        boolean[] needed = new boolean[units.size()];
        for (Object p : used) {
            int u = unitOfReported(p);
            if (u >= 0) {
                needed[u] = true;
                backwardLow = units.get(u).layer ? Math.min(backwardLow, u) : backwardLow;
            }
        }
        int ahead = prefetching() && backwardLow > 0 && !needed[backwardLow - 1] ? backwardLow - 1 : -1;
        if (prefetched >= 0 && needed[prefetched]) {
            prefetched = -1; // used now: an ordinary gathered unit
        }
        for (int u = 0; u < units.size(); u++) {
            if (!needed[u] && u != ahead) {
                release(units.get(u));
            }
        }
        for (int u = 0; u < units.size(); u++) {
            if (needed[u]) {
                gather(units.get(u));
            }
        }
        if (ahead >= 0) {
            prefetch(ahead);
        }
    }

    /** Whether unit gathers are started ahead: {@code --overlap-param-gather}, inside a training micro-batch. */
    private boolean prefetching() {
        return comm != null && overlap.paramGather() && workspace != null;
    }

    private int unitOfReported(Object reported) {
        int i = paramOfReported(reported);
        return i < 0 ? -1 : unitOf[i];
    }

    private int paramOfReported(Object reported) {
        NDArray a = reported instanceof ai.djl.nn.Parameter p ? (p.isInitialized() ? p.getArray() : null)
                : reported instanceof NDArray x ? x : null;
        if (a == null) {
            return -1;
        }
        Integer i = index.get(a);
        return i == null ? -1 : i;
    }

    /** All-gathers a freed unit's shards into its reallocated storage, and waits. Collective over the unit's group. */
    private void gather(Unit u) {
        startGather(u);
        awaitGather(u);
    }

    /** Starts unit {@code v}'s gather without waiting: the unit gathered ahead (one at most; a missed one is freed). */
    private void prefetch(int v) {
        if (prefetched >= 0 && prefetched != v) {
            release(units.get(prefetched));
        }
        startGather(units.get(v));
        prefetched = v;
    }

    /**
     * Reallocates the storage here, on the compute thread, then fills it: here, or on the
     * communication thread under overlap (nothing reads the storage before {@link #awaitGather}).
     */
    private void startGather(Unit u) {
        if (u.gathered) {
            return;
        }
        TorchNative.resizeStorage(u.storage, u.padded * type.getNumOfBytes());
        u.gathered = true;
        if (comm == null) {
            fill(u);
            return;
        }
        u.gathering = comm.submit("overlapped parameter all-gather of unit " + u.name + " on " + u.group.name(),
                overlap.waitLimit(), () -> {
                    fill(u);
                    return null;
                });
    }

    private void fill(Unit u) {
        long piece = u.piece();
        try (NDArray mine = shards.get(new NDIndex("{}:{}", u.shardStart, u.shardStart + piece));
                NDArray all = u.group.size() == 1 ? mine.duplicate() : u.group.allGather(mine, 0)) {
            u.storage.set(new NDIndex("..."), all); // through the alias: the parameters' versions stay
        }
    }

    /** Waits for the unit's gather on the communication thread, if one is pending; its failure is thrown here. */
    private void awaitGather(Unit u) {
        PendingWork<?> w = u.gathering;
        if (w == null) {
            return;
        }
        u.gathering = null;
        long t0 = System.nanoTime();
        try {
            w.await();
        } finally {
            waitedNanos += System.nanoTime() - t0;
        }
    }

    /** Frees a gathered unit's storage, after its pending gather (which writes into it) has ended. */
    private void release(Unit u) {
        if (prefetched >= 0 && units.get(prefetched) == u) {
            prefetched = -1;
        }
        if (u.gathered) {
            awaitGather(u);
            TorchNative.resizeStorage(u.storage, 0);
            u.gathered = false;
        }
    }

    /** Frees every unit's storage (after a step's passes, after an update: gathered values are stale). */
    public void releaseAll() {
        units.forEach(this::release);
        prefetched = -1;
        forwardHigh = -1;
    }

    /**
     * Gathers every unit (collective), for readers of whole weights between steps (logits at the end
     * of a run, a save of the weights); {@link #releaseAll()} frees them again.
     */
    public void gatherAll() {
        units.forEach(this::gather);
    }

    // ------------------------------------------------------------------ gradients

    /** Zeroes the gradient shard before a step's first micro-batch. */
    public void zeroGradients() {
        gradShard.set(new NDIndex("..."), 0f); // a fill: an overflow's inf must not linger as NaN
    }

    /** Binds the parameters' gradients to a new zeroed full-size workspace for one micro-batch's backward. */
    public void beginMicroBatch() {
        if (workspace != null) {
            throw new IllegalStateException("a micro-batch's gradients are still bound (endMicroBatch not called)");
        }
        workspace = manager.newSubManager();
        grads = workspace.zeros(new Shape(fullSize), type);
        for (int i = 0; i < params.size(); i++) {
            TorchNative.bindGradient(params.get(i).array(), grads, fullOffset[i]);
        }
        backwardLow = 0;
        for (int u = 0; u < units.size(); u++) {
            backwardLow = units.get(u).layer ? u + 1 : backwardLow;
        }
        if (reducer != null) {
            reducer.arm();
        }
    }

    /** The tape's gradient-final listener under {@code --overlap-grad-reduce} (the compute thread, during backward). */
    private void gradientsFinal(List<Object> done) {
        if (closed || workspace == null) {
            return; // not a training micro-batch's backward
        }
        for (Object o : done) {
            int i = paramOfReported(o);
            if (i >= 0) {
                reducer.gradientFinal(i);
            }
        }
    }

    /**
     * After the micro-batch's backward: frees the units, reduce-scatters each unit's workspace
     * into this rank's shard (summed; under {@code --overlap-grad-reduce} what backward did not
     * start yet, then waits for all), drops the workspace. Collective over the data-parallel group.
     */
    public void endMicroBatch() {
        if (workspace == null) {
            throw new IllegalStateException("no micro-batch's gradients are bound (beginMicroBatch not called)");
        }
        boolean ended = false;
        try {
            releaseAll();
            if (reducer != null) {
                long t0 = System.nanoTime();
                try {
                    reducer.finish();
                } finally {
                    waitedNanos += System.nanoTime() - t0;
                }
            } else {
                for (int u = 0; u < units.size(); u++) {
                    reduceUnit(u, grads);
                }
            }
            ended = true;
        } finally {
            params.forEach(p -> TorchNative.dropGradient(p.array()));
            if (ended || comm == null) {
                workspace.close();
            } // else a reduce-scatter past its wait may still read it: the manager frees it on close, after the thread
            workspace = null;
            grads = null;
        }
    }

    /** Hands unit u's reduce-scatter to the communication thread ({@link UnitReducer}). */
    private PendingWork<?> startReduce(int u) {
        Unit unit = units.get(u);
        NDArray workspaceGrads = grads; // this micro-batch's, whatever the compute thread binds next
        return comm.submit("overlapped gradient reduce-scatter of unit " + unit.name + " (" + (u + 1) + " of "
                + units.size() + ") on " + unit.group.name(), overlap.waitLimit(), () -> {
                    reduceUnit(u, workspaceGrads);
                    return null;
                });
    }

    /**
     * Reduce-scatters unit u's slice of the workspace (fp32) over the unit's group and adds this
     * rank's piece into the gradient shard (expert units: summed over the expert-data group, divided
     * by the whole data-parallel size later, as Megatron's DDP).
     */
    private void reduceUnit(int index, NDArray workspaceGrads) {
        Unit u = units.get(index);
        long piece = u.piece();
        try (NDArray part = workspaceGrads.get(new NDIndex("{}:{}", u.fullStart, u.fullStart + u.padded));
                NDArray wide = part.toType(DataType.FLOAT32, false);
                NDArray sum = u.group.size() == 1 ? wide.duplicate() : u.group.reduceScatter(wide, 0, ReduceOp.SUM);
                NDArray into = gradShard.get(new NDIndex("{}:{}", u.shardStart, u.shardStart + piece))) {
            into.addi(sum);
        }
    }

    /**
     * Completes over the tensor-parallel group the gradients flagged
     * {@link TrainableParameter#tpPartialGradient()}, on this rank's fp32 shard after the
     * data-parallel reduction (Megatron's order): the same elements of the same parameters lie at
     * the same shard positions on every tensor-parallel rank (same shapes, same units, same
     * data-parallel rank), so each flagged range is all-reduced in place. Collective over {@code tp}.
     */
    public void completeTensorParallel(ProcessGroup tp) {
        if (tp.size() == 1) {
            return;
        }
        for (Unit u : units) {
            long piece = u.piece();
            long lo = u.fullStart + piece * u.group.rank();
            for (int i = u.first; i < u.end; i++) {
                long a = Math.max(lo, fullOffset[i]);
                long b = Math.min(lo + piece, fullOffset[i] + params.get(i).array().getShape().size());
                if (a < b && params.get(i).tpPartialGradient()) {
                    try (NDArray view = gradShard.get(new NDIndex("{}:{}", u.shardStart + a - lo, u.shardStart + b - lo));
                            NDArray sum = tp.allReduce(view, ReduceOp.SUM)) {
                        view.set(new NDIndex("..."), sum); // a copy: an inf must stay inf
                    }
                }
            }
        }
    }

    /**
     * Under overlap: seconds of communication on the communication thread so far and the part
     * the compute thread waited for; null without overlap.
     */
    public double[] communicationAndWaitSeconds() {
        return comm == null ? null : new double[] {comm.busySeconds(), waitedNanos / 1e9};
    }

    /** The gradient shard after the step's last micro-batch, divided by {@code divisor} in place. */
    public NDArray averagedGradients(int divisor) {
        return gradShard.divi(divisor);
    }

    // ------------------------------------------------------------------ weights

    /** This rank's weights (its unit shards back to back, the weights' dtype): fp32 weights are their own masters. */
    public NDArray shards() {
        return shards;
    }

    /** Copies updated fp32 masters into the shards (16-bit weights) and frees every unit: the next forward gathers. */
    public void setShards(NDArray masters) {
        if (masters != shards) {
            try (NDArray typed = masters.toType(type, true)) {
                shards.set(new NDIndex("..."), typed);
            }
        }
        releaseAll();
    }

    /** Per-element 1/0 fp32 vector over {@link #shards()} from a per-parameter predicate. */
    public NDArray mask(NDManager m, Predicate<TrainableParameter> which) {
        NDArray v = m.zeros(new Shape(shardSize), DataType.FLOAT32);
        for (Unit u : units) {
            long piece = u.piece();
            long lo = u.fullStart + piece * u.group.rank();
            long hi = lo + piece;
            for (int i = u.first; i < u.end; i++) {
                long a = Math.max(lo, fullOffset[i]);
                long b = Math.min(hi, fullOffset[i] + params.get(i).array().getShape().size());
                if (a < b && which.test(params.get(i))) {
                    v.set(new NDIndex("{}:{}", u.shardStart + a - lo, u.shardStart + b - lo), 1f);
                }
            }
        }
        return v;
    }

    // ------------------------------------------------------------------ checkpoints

    /**
     * This rank's piece of the distributed optimizer's order ({@code optim}: the parameters back to
     * back in model order, padded to a multiple of DP, rank r holding the r-th 1/DP; under expert
     * parallelism that for the dense parameters over DP, followed by that for the expert parameters
     * over the expert-data group) of a vector laid out as {@link #shards()} (fp32 masters or a
     * moment): what a checkpoint records, so that one saved under ZeRO-3 is one of {@code optim}'s.
     * Collective over the data-parallel (and expert-data) group.
     */
    public NDArray toOptimizerOrder(NDArray unitShard, NDManager m) {
        try (NDManager s = m.newSubManager()) {
            NDArray out = sectionToOptimizerOrder(false, unitShard, s);
            if (hasExperts()) {
                out = NDArrays.concat(new NDList(out, sectionToOptimizerOrder(true, unitShard, s)));
            }
            NDArray mine = out.duplicate();
            mine.attach(m);
            return mine;
        }
    }

    /** {@link #toOptimizerOrder} for the dense or the expert units alone, over their group. */
    private NDArray sectionToOptimizerOrder(boolean expert, NDArray unitShard, NDManager s) {
        ProcessGroup g = expert ? expertDp : dp;
        long start = expert ? denseShardSize : 0;
        long length = expert ? shardSize - denseShardSize : denseShardSize;
        NDArray section = unitShard.get(new NDIndex("{}:{}", start, start + length));
        section.attach(s);
        NDArray all = g.size() == 1 ? section.duplicate() : g.allGather(section, 0); // rank after rank
        all.attach(s);
        long padded = optimizerOrderPadded(expert);
        NDArray flat = s.zeros(new Shape(padded), unitShard.getDataType());
        long at = 0;
        for (Unit u : section(expert)) {
            long n = unitSize(u);
            long p = u.piece();
            for (int r = 0; r < g.size(); r++) { // rank r's piece of the unit: elements [r p, (r+1) p)
                long lo = Math.min(n, r * p);
                long hi = Math.min(n, (r + 1) * p);
                if (hi > lo) {
                    long src = r * length + u.shardStart - start;
                    flat.set(new NDIndex("{}:{}", at + lo, at + hi), all.get(new NDIndex("{}:{}", src, src + hi - lo)));
                }
            }
            at += n;
        }
        long piece = padded / g.size();
        NDArray mine = flat.get(new NDIndex("{}:{}", piece * g.rank(), piece * (g.rank() + 1)));
        mine.attach(s);
        return mine;
    }

    /**
     * The inverse of {@link #toOptimizerOrder}: this rank's unit shards from its piece in the
     * distributed optimizer's order. Collective over the data-parallel (and expert-data) group.
     */
    public NDArray fromOptimizerOrder(NDArray optimPiece, NDManager m) {
        try (NDManager s = m.newSubManager()) {
            NDArray out = s.zeros(new Shape(shardSize), optimPiece.getDataType());
            long densePiece = optimizerOrderPadded(false) / dp.size();
            sectionFromOptimizerOrder(false, optimPiece.get(new NDIndex("0:{}", densePiece)), out, s);
            if (hasExperts()) {
                sectionFromOptimizerOrder(true, optimPiece.get(new NDIndex("{}:", densePiece)), out, s);
            }
            out.attach(m);
            return out;
        }
    }

    /** {@link #fromOptimizerOrder} for the dense or the expert units alone, over their group, into {@code out}. */
    private void sectionFromOptimizerOrder(boolean expert, NDArray piece, NDArray out, NDManager s) {
        ProcessGroup g = expert ? expertDp : dp;
        piece.attach(s);
        NDArray flat = g.size() == 1 ? piece.duplicate() : g.allGather(piece, 0);
        flat.attach(s);
        long at = 0;
        for (Unit u : section(expert)) {
            long n = unitSize(u);
            long p = u.piece();
            long lo = Math.min(n, g.rank() * p);
            long hi = Math.min(n, (g.rank() + 1) * p);
            if (hi > lo) {
                out.set(new NDIndex("{}:{}", u.shardStart, u.shardStart + hi - lo),
                        flat.get(new NDIndex("{}:{}", at + lo, at + hi)));
            }
            at += n;
        }
    }

    /** The dense or the expert units, in model order. */
    private List<Unit> section(boolean expert) {
        return units.stream().filter(u -> u.expert == expert).toList();
    }

    private boolean hasExperts() {
        return units.stream().anyMatch(u -> u.expert);
    }

    /** The optimizer order's length for the dense or the expert parameters: their size padded to a multiple of their group's. */
    private long optimizerOrderPadded(boolean expert) {
        int n = (expert ? expertDp : dp).size();
        long real = 0;
        for (Unit u : section(expert)) {
            real += unitSize(u);
        }
        return (real + n - 1) / n * n;
    }

    private long unitSize(Unit u) {
        return fullOffset[u.end - 1] + params.get(u.end - 1).array().getShape().size() - u.fullStart;
    }

    /** Elements of this rank's dense unit shards: the first part of {@link #shards()}, the expert units' after it. */
    public long denseShardSize() {
        return denseShardSize;
    }

    /** Elements this rank keeps: the sum of its unit shards. */
    public long shardSize() {
        return shardSize;
    }

    /** Number of units (FSDP units: layers and the parameters around them). */
    public int unitCount() {
        return units.size();
    }

    /**
     * Bytes of weights this rank holds now, measured: its shards plus the storage of every unit
     * gathered at the moment (none between steps).
     */
    public long parameterBytes() {
        long held = 0;
        for (Unit u : units) {
            held += TorchNative.storageBytes(u.storage);
        }
        return shards.getShape().size() * type.getNumOfBytes() + held;
    }

    /** Bytes of the fp32 gradient shard kept between micro-batches. */
    public long gradientBytes() {
        return gradShard.getShape().size() * 4;
    }

    @Override
    public void close() {
        closed = true;
        if (workspace != null) {
            params.forEach(p -> TorchNative.dropGradient(p.array()));
        }
        gatherIfPossibleOnClose();
        // work still queued or running reads the storages and the workspace: free them only after it ended
        if (comm == null || comm.closeAndWait(overlap.waitLimit())) {
            manager.close();
        }
    }

    /**
     * The parameters stay views of the unit storages after this closes: leave no tensor with a
     * freed storage behind for a later reader (one rank's local copy of its own shards only when
     * DP is 1; otherwise the values are gone with the other ranks' shards).
     */
    private void gatherIfPossibleOnClose() {
        if (dp.size() == 1) {
            units.forEach(this::gather);
        }
    }
}
