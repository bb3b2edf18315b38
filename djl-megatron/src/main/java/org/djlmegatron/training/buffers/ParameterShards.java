package org.djlmegatron.training.buffers;

import ai.djl.ndarray.NDArray;
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
    private final NDManager manager;
    private final DataType type;
    private final long fullSize;
    private final long shardSize;
    /** This rank's weights: the concatenation of its unit shards, in the weights' dtype. */
    private final NDArray shards;
    /** This rank's fp32 main-gradient shard (same layout as {@link #shards}). */
    private final NDArray gradShard;
    private NDManager workspace;
    private NDArray grads;
    private boolean closed;

    /** One FSDP unit: a run of consecutive parameters with a storage of their own. */
    private static final class Unit {
        final String name;
        final boolean layer;
        final int first;
        final int end;
        final long padded;
        final long fullStart;
        final long shardStart;
        NDArray storage;
        boolean gathered = true;

        Unit(String name, int first, int end, long padded, long fullStart, long shardStart) {
            this.name = name;
            this.layer = LAYER.matcher(name + ".").find();
            this.first = first;
            this.end = end;
            this.padded = padded;
            this.fullStart = fullStart;
            this.shardStart = shardStart;
        }
    }

    /**
     * Moves the parameters into one storage per unit, keeps this rank's shard of each and frees the
     * storages; registers the gather/free hooks on {@code tape}.
     */
    public ParameterShards(List<TrainableParameter> params, ProcessGroup dp, Tape tape, NDManager parent) {
        if (!ParamAndGradBuffer.supports(params)) {
            throw new IllegalArgumentException("--data-parallel-sharding-strategy optim_grads_params needs the native "
                    + "library and one weight dtype (fp32, bf16 or fp16) and device");
        }
        this.params = List.copyOf(params);
        this.dp = dp;
        type = params.get(0).array().getDataType();
        manager = parent.newSubManager(params.get(0).array().getDevice());
        unitOf = new int[params.size()];
        fullOffset = new long[params.size()];
        cutUnits();
        for (int i = 0; i < params.size(); i++) {
            index.put(params.get(i).array(), i);
        }
        Unit last = units.get(units.size() - 1);
        fullSize = last.fullStart + last.padded;
        shardSize = last.shardStart + last.padded / dp.size();
        shards = manager.zeros(new Shape(shardSize), type);
        gradShard = manager.zeros(new Shape(shardSize), DataType.FLOAT32);
        for (Unit u : units) {
            u.storage = manager.zeros(new Shape(u.padded), type);
            for (int i = u.first; i < u.end; i++) {
                TorchNative.bindToBuffer(params.get(i).array(), u.storage, fullOffset[i] - u.fullStart);
            }
            long piece = u.padded / dp.size();
            try (NDArray mine = u.storage.get(new NDIndex("{}:{}", piece * dp.rank(), piece * (dp.rank() + 1)))) {
                shards.set(new NDIndex("{}:{}", u.shardStart, u.shardStart + piece), mine);
            }
        }
        params.forEach(p -> TorchNative.dropGradient(p.array())); // no .grad left from an earlier backward
        releaseAll();
        tape.onUse(this::beforeForwardUse);
        tape.beforeSegmentBackward(this::beforeBackwardSegment);
    }

    /** Units: consecutive parameters with the same layer prefix (or first name component). */
    private void cutUnits() {
        int dpSize = dp.size();
        long full = 0;
        long shard = 0;
        int start = 0;
        for (int i = 0; i <= params.size(); i++) {
            if (i < params.size() && (i == start || unitName(params.get(i)).equals(unitName(params.get(start))))) {
                continue;
            }
            long size = 0;
            for (int j = start; j < i; j++) {
                unitOf[j] = units.size();
                fullOffset[j] = full + size;
                size += params.get(j).array().getShape().size();
            }
            long padded = Math.max(dpSize, (size + dpSize - 1) / dpSize * dpSize);
            units.add(new Unit(unitName(params.get(start)), start, i, padded, full, shard));
            full += padded;
            shard += padded / dpSize;
            start = i;
            if (i == params.size()) {
                break;
            }
            i--; // parameter i starts the next unit
        }
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
     * Forward: gathers the used parameter's unit if it is freed; a layer frees every unit before it
     * (the units after the last layer, the final norm, the output layer and the tied embedding, run
     * together in the head and stay gathered until backward's first segment frees what it does not use).
     */
    private void beforeForwardUse(Object reported) {
        int u = unitOfReported(reported);
        if (closed || u < 0 || units.get(u).gathered) {
            return;
        }
        if (units.get(u).layer) {
            for (int v = 0; v < u; v++) {
                release(units.get(v));
            }
        }
        gather(units.get(u));
    }

    /** Backward: gathers the units the segment uses, frees every other. */
    private void beforeBackwardSegment(List<Object> used) {
        if (closed) {
            return;
        }
        boolean[] needed = new boolean[units.size()];
        for (Object p : used) {
            int u = unitOfReported(p);
            if (u >= 0) {
                needed[u] = true;
            }
        }
        for (int u = 0; u < units.size(); u++) {
            if (!needed[u]) {
                release(units.get(u));
            }
        }
        for (int u = 0; u < units.size(); u++) {
            if (needed[u]) {
                gather(units.get(u));
            }
        }
    }

    private int unitOfReported(Object reported) {
        NDArray a = reported instanceof ai.djl.nn.Parameter p ? (p.isInitialized() ? p.getArray() : null)
                : reported instanceof NDArray x ? x : null;
        if (a == null) {
            return -1;
        }
        Integer i = index.get(a);
        return i == null ? -1 : unitOf[i];
    }

    /** All-gathers a freed unit's shards into its reallocated storage. Collective over the data-parallel group. */
    private void gather(Unit u) {
        if (u.gathered) {
            return;
        }
        long piece = u.padded / dp.size();
        TorchNative.resizeStorage(u.storage, u.padded * type.getNumOfBytes());
        try (NDArray mine = shards.get(new NDIndex("{}:{}", u.shardStart, u.shardStart + piece));
                NDArray all = dp.size() == 1 ? mine.duplicate() : dp.allGather(mine, 0)) {
            u.storage.set(new NDIndex("..."), all); // through the alias: the parameters' versions stay
        }
        u.gathered = true;
    }

    private void release(Unit u) {
        if (u.gathered) {
            TorchNative.resizeStorage(u.storage, 0);
            u.gathered = false;
        }
    }

    /** Frees every unit's storage (after a step's passes, after an update: gathered values are stale). */
    public void releaseAll() {
        units.forEach(this::release);
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
    }

    /**
     * After the micro-batch's backward and its tensor-parallel gradient completion: frees the
     * units, reduce-scatters each unit's workspace into this rank's shard (summed), drops the
     * workspace. Collective over the data-parallel group.
     */
    public void endMicroBatch() {
        if (workspace == null) {
            throw new IllegalStateException("no micro-batch's gradients are bound (beginMicroBatch not called)");
        }
        try {
            releaseAll();
            for (Unit u : units) {
                long piece = u.padded / dp.size();
                try (NDArray part = grads.get(new NDIndex("{}:{}", u.fullStart, u.fullStart + u.padded));
                        NDArray wide = part.toType(DataType.FLOAT32, false);
                        NDArray sum = dp.size() == 1 ? wide.duplicate() : dp.reduceScatter(wide, 0, ReduceOp.SUM);
                        NDArray into = gradShard.get(new NDIndex("{}:{}", u.shardStart, u.shardStart + piece))) {
                    into.addi(sum);
                }
            }
        } finally {
            params.forEach(p -> TorchNative.dropGradient(p.array()));
            workspace.close();
            workspace = null;
            grads = null;
        }
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
            long piece = u.padded / dp.size();
            long lo = u.fullStart + piece * dp.rank();
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
     * back in model order, padded to a multiple of DP, rank r holding the r-th 1/DP) of a vector laid
     * out as {@link #shards()} (fp32 masters or a moment): what a checkpoint records, so that one
     * saved under ZeRO-3 is one of {@code optim}'s. Collective over the data-parallel group.
     */
    public NDArray toOptimizerOrder(NDArray unitShard, NDManager m) {
        long real = 0;
        for (Unit u : units) {
            real += unitSize(u);
        }
        long padded = (real + dp.size() - 1) / dp.size() * dp.size();
        long piece = padded / dp.size();
        try (NDManager s = m.newSubManager()) {
            NDArray all = dp.size() == 1 ? unitShard.duplicate() : dp.allGather(unitShard, 0); // rank after rank
            all.attach(s);
            NDArray flat = s.zeros(new Shape(padded), unitShard.getDataType());
            long at = 0;
            for (Unit u : units) {
                long n = unitSize(u);
                long p = u.padded / dp.size();
                for (int r = 0; r < dp.size(); r++) { // rank r's piece of the unit: elements [r p, (r+1) p)
                    long lo = Math.min(n, r * p);
                    long hi = Math.min(n, (r + 1) * p);
                    if (hi > lo) {
                        long src = r * shardSize + u.shardStart;
                        flat.set(new NDIndex("{}:{}", at + lo, at + hi), all.get(new NDIndex("{}:{}", src, src + hi - lo)));
                    }
                }
                at += n;
            }
            NDArray mine = flat.get(new NDIndex("{}:{}", piece * dp.rank(), piece * (dp.rank() + 1))).duplicate();
            mine.attach(m);
            return mine;
        }
    }

    /** The inverse of {@link #toOptimizerOrder}: this rank's unit shards from its piece in the distributed optimizer's order. Collective. */
    public NDArray fromOptimizerOrder(NDArray optimPiece, NDManager m) {
        try (NDManager s = m.newSubManager()) {
            NDArray flat = dp.size() == 1 ? optimPiece.duplicate() : dp.allGather(optimPiece, 0);
            flat.attach(s);
            NDArray out = s.zeros(new Shape(shardSize), optimPiece.getDataType());
            long at = 0;
            for (Unit u : units) {
                long n = unitSize(u);
                long p = u.padded / dp.size();
                long lo = Math.min(n, dp.rank() * p);
                long hi = Math.min(n, (dp.rank() + 1) * p);
                if (hi > lo) {
                    out.set(new NDIndex("{}:{}", u.shardStart, u.shardStart + hi - lo),
                            flat.get(new NDIndex("{}:{}", at + lo, at + hi)));
                }
                at += n;
            }
            out.attach(m);
            return out;
        }
    }

    private long unitSize(Unit u) {
        return fullOffset[u.end - 1] + params.get(u.end - 1).array().getShape().size() - u.fullStart;
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
        manager.close();
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
