package org.djlmegatron.moe;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Future;
import java.util.function.Function;
import org.djlmegatron.autograd.Tape;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.engine.Cast;
import org.djlmegatron.nn.BlockList;
import org.djlmegatron.nn.ParallelBlock;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.transformer.Mlp;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Mixture of experts as Megatron-Core runs it: the top-k router, then each token's rows sorted
 * by expert, dispatched to the expert-parallel rank that holds the expert (this rank holds
 * num_experts / EP of them, named by their global numbers), the local experts' MLPs, the rows
 * combined back and weighted by the router. Experts are sharded over the tensor-parallel group
 * like the dense MLP (expert-tensor size = TP), so {@link #partial} is unreduced; every TP rank
 * of an expert-parallel rank routes the same (gathered) tokens, so the exchange is between ranks
 * of the same TP rank and the partial sums stay partial through it.
 */
public final class MoeLayer extends ParallelBlock {

    private final TopKRouter router;
    private final List<Mlp> experts = new ArrayList<>();
    private final SharedExpertMlp sharedExperts; // null without moe_shared_expert_intermediate_size
    private final int numExperts;
    private final int firstExpert;
    private final ProcessGroup ep;
    private final MoeStats stats;
    private MoeConfig moe = MoeConfig.DEFAULT;
    private boolean recomputeActivation;

    public MoeLayer(RankContext ctx, TransformerConfig cfg, boolean sequenceParallel) {
        super(ctx);
        numExperts = cfg.numExperts();
        ep = ctx.group(GroupKind.EXPERT);
        int local = numExperts / ep.size();
        firstExpert = ep.rank() * local;
        router = part("router", new TopKRouter(ctx, cfg));
        BlockList<Mlp> list = part("experts", new ExpertsHolder(ctx, firstExpert)).localExperts;
        for (int e = 0; e < local; e++) {
            experts.add(list.add(new Mlp(ctx, cfg, cfg.moeFfnHiddenSize(), cfg.addBiasLinear(),
                    sequenceParallel)));
        }
        sharedExperts = cfg.hasSharedExperts()
                ? part("shared_experts", new SharedExpertMlp(ctx, cfg, sequenceParallel)) : null;
        stats = new MoeStats(numExperts);
    }

    /** Router score function, balancing losses and dispatcher. */
    public void setConfig(MoeConfig moe) {
        this.moe = moe;
        router.setConfig(moe);
    }

    /** The router (expert bias, for aux-loss-free balancing). */
    public TopKRouter router() {
        return router;
    }

    /** This layer's balance figures (tokens per expert, losses) since they were last reset. */
    public MoeStats stats() {
        return stats;
    }

    /** Standalone use on a replicated input: reduces over the group. */
    @Override
    public NDArray apply(NDArray x) {
        NDArray in = tp.isParallel() ? tape().cut(x, tp.copyToRegion()) : x;
        return tp.reduceFromRegion(partial(in));
    }

    /** Unreduced output {@code [b, s, hidden]} for an input inside the tensor-parallel region. */
    public NDArray partial(NDArray x) {
        Shape shape = x.getShape();
        NDArray tokens = x.reshape(-1, shape.get(shape.dimension() - 1)); // [T, h]
        int batch = shape.dimension() == 3 ? (int) shape.get(0) : 1;
        TopKRouter.Routing routing = router.route(tokens, batch);
        long[] chosen = routing.experts().toLongArray(); // [T * k], row-major
        int k = (int) routing.experts().getShape().get(1);
        int numTokens = (int) tokens.getShape().get(0);
        NDManager m = x.getManager();

        long[] routed = new long[numExperts];
        for (long e : chosen) {
            routed[(int) e]++;
        }
        stats.record(tape().key(), routed, routing.auxLoss(), routing.zLoss());
        boolean[] kept = null;
        int capacity = 0;
        if (moe.capacityFactor() != null) {
            capacity = ExpertCapacity.capacity(numTokens, k, numExperts, moe.capacityFactor());
            kept = ExpertCapacity.keep(chosen, routing.weights().toFloatArray(), numExperts, capacity, moe.dropPolicy());
        }

        // kept (token, slot) pairs sorted by expert, stably (then zero rows up to the capacity when
        // padding, token index T); rowOf[i]: pair i's row in that order (0, with weight 0, if dropped)
        long[] perExpert = new long[numExperts];
        for (int i = 0; i < chosen.length; i++) {
            if (kept == null || kept[i]) {
                perExpert[(int) chosen[i]]++;
            }
        }
        long[] rowsPerExpert = perExpert.clone();
        if (moe.padToCapacity()) {
            java.util.Arrays.fill(rowsPerExpert, capacity);
        }
        long[] start = new long[numExperts];
        long total = rowsPerExpert[0];
        for (int e = 1; e < numExperts; e++) {
            start[e] = start[e - 1] + rowsPerExpert[e - 1];
            total += rowsPerExpert[e];
        }
        long[] tokenOfRow = new long[(int) total];
        java.util.Arrays.fill(tokenOfRow, numTokens); // padding rows: the zero row
        long[] rowOf = new long[chosen.length];
        long[] fill = start.clone();
        for (int i = 0; i < chosen.length; i++) {
            if (kept == null || kept[i]) {
                int row = (int) fill[(int) chosen[i]]++;
                rowOf[i] = row;
                tokenOfRow[row] = i / k;
            }
        }
        perExpert = rowsPerExpert;
        NDArray source = moe.padToCapacity()
                ? NDArrays.concat(new NDList(tokens, m.zeros(new Shape(1, tokens.getShape().get(1)), tokens.getDataType())))
                : tokens;
        NDArray sorted = source.get(m.create(tokenOfRow));
        ExpertExchange exchange = ep.size() == 1 ? null
                : new ExpertExchange(ep, moe.dispatcher(), perExpert, experts.size(), m, stats);
        // --moe-shared-expert-overlap: the dispatch's exchange runs while the shared experts compute
        Future<NDArray> started = exchange != null && sharedExperts != null && moe.sharedExpertOverlap()
                ? exchange.start(sorted) : null;
        // the combine still needs the weights (and the shared experts' output): carried over the exchange
        NDList live = new NDList(routing.weights());
        if (sharedExperts != null) {
            live.add(sharedExperts.partial(tokens));
        }
        NDArray all;
        try (Tape.Carry c = tape().carry(live)) {
            if (exchange == null) {
                all = runLocal(sorted, perExpert);
            } else {
                NDArray mine = exchange.dispatch(tape(), sorted, started);
                all = exchange.combine(tape(), runLocal(mine, exchange.localCounts()));
            }
        }
        NDArray rows = m.create(rowOf, new Shape(numTokens, k));
        NDArray weights = Cast.to(live.get(0), x.getDataType()); // [T, k]
        if (kept != null) {
            weights = weights.mul(keepMask(m, kept, numTokens, k, x.getDataType()));
        }
        NDArray out = null;
        for (int j = 0; j < k; j++) {
            NDArray slot = all.get(rows.get(":, " + j)).mul(weights.get(":, " + j + ":" + (j + 1)));
            out = out == null ? slot : out.add(slot);
        }
        if (sharedExperts != null) {
            out = out.add(live.get(1));
        }
        return out.reshape(shape);
    }

    /** 1 for kept pairs, 0 for dropped ones, {@code [T, k]}; libtorch-owned (backward reads it). */
    private static NDArray keepMask(NDManager m, boolean[] kept, int numTokens, int k, ai.djl.ndarray.types.DataType type) {
        float[] v = new float[kept.length];
        for (int i = 0; i < v.length; i++) {
            v[i] = kept[i] ? 1f : 0f;
        }
        NDArray owned;
        try (NDArray javaBacked = m.create(v, new Shape(numTokens, k))) {
            owned = javaBacked.duplicate();
        }
        if (type == ai.djl.ndarray.types.DataType.FLOAT32) {
            return owned;
        }
        NDArray typed = owned.toType(type, false); // another type: a new tensor
        owned.close();
        return typed;
    }

    /** The local experts on their rows ({@code counts[l]} consecutive rows each); rows in, rows out. */
    private NDArray runLocal(NDArray rows, long[] counts) {
        if (moe.groupedGemm() && experts.size() > 1) {
            return GroupedExperts.run(experts, rows, counts, this::activateGrouped);
        }
        List<Mlp> used = new ArrayList<>();
        NDList hidden = new NDList();
        long at = 0;
        for (int l = 0; l < experts.size(); l++) {
            if (counts[l] > 0) {
                used.add(experts.get(l));
                hidden.add(experts.get(l).up(rows.get(new ai.djl.ndarray.index.NDIndex("{}:{}", at, at + counts[l]))));
            }
            at += counts[l];
        }
        if (used.isEmpty()) {
            return rows; // no rows here: [0, h] either way
        }
        NDList activated = activate(used, hidden);
        NDList outputs = new NDList(used.size());
        for (int i = 0; i < used.size(); i++) {
            outputs.add(used.get(i).down(activated.get(i)));
        }
        return outputs.size() == 1 ? outputs.get(0) : NDArrays.concat(outputs);
    }

    /** Every used expert's activation, recomputed in backward under {@code moe_act}. */
    private NDList activate(List<Mlp> used, NDList hidden) {
        Function<NDList, NDList> fn = in -> {
            NDList out = new NDList(in.size());
            for (int i = 0; i < used.size(); i++) {
                out.add(used.get(i).activate(in.get(i)));
            }
            return out;
        };
        return recomputeActivation ? tape().checkpoint(hidden, fn) : fn.apply(hidden);
    }

    /** The grouped experts' activation {@code [L, rows, 2 ffn]}, recomputed in backward under {@code moe_act}. */
    private NDArray activateGrouped(NDArray hidden) {
        Mlp any = experts.get(0); // the activation has no parameters: every expert's is the same
        return recomputeActivation ? tape().checkpoint(hidden, any::activate) : any.activate(hidden);
    }

    /** Recomputes the experts' activations in backward ({@code --recompute-modules moe_act}). */
    public void setRecomputeActivation(boolean recompute) {
        this.recomputeActivation = recompute;
    }

    /** {@code experts.local_experts.E}, E the global expert number. */
    private static final class ExpertsHolder extends ParallelBlock {
        final BlockList<Mlp> localExperts;

        ExpertsHolder(RankContext ctx, int firstExpert) {
            super(ctx);
            localExperts = part("local_experts", new BlockList<>(ctx, firstExpert));
        }

        @Override
        public NDArray apply(NDArray x) {
            throw new UnsupportedOperationException("experts are applied by MoeLayer");
        }
    }
}
