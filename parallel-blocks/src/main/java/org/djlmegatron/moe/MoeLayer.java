package org.djlmegatron.moe;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Function;
import org.djlmegatron.engine.Cast;
import org.djlmegatron.nn.BlockList;
import org.djlmegatron.nn.ParallelBlock;
import org.djlmegatron.transformer.Mlp;
import org.djlmegatron.transformer.TransformerConfig;
import org.djlmegatron.parallel.RankContext;

/**
 * Mixture of experts with all experts on this rank (expert parallelism comes later): a
 * softmax top-k router, optionally renormalising the chosen probabilities, then each expert's
 * MLP on the tokens routed to it, combined with the router weights. Experts are sharded over the
 * tensor-parallel group like the dense MLP, so {@link #partial} is unreduced.
 */
public final class MoeLayer extends ParallelBlock {

    private final TopKRouter router;
    private final List<Mlp> experts = new ArrayList<>();
    private boolean recomputeActivation;

    public MoeLayer(RankContext ctx, TransformerConfig cfg, boolean sequenceParallel) {
        super(ctx);
        router = part("router", new TopKRouter(ctx, cfg));
        BlockList<Mlp> list = part("experts", new ExpertsHolder(ctx)).localExperts;
        for (int e = 0; e < cfg.numExperts(); e++) {
            experts.add(list.add(new Mlp(ctx, cfg, cfg.moeFfnHiddenSize(), cfg.addBiasLinear(),
                    sequenceParallel)));
        }
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
        TopKRouter.Routing routing = router.route(tokens);
        long[] chosen = routing.experts().toLongArray(); // [T * k], row-major
        int k = (int) routing.experts().getShape().get(1);
        int numTokens = (int) tokens.getShape().get(0);

        // tokens of each expert in ascending order, and each (token, slot)'s row in the outputs
        List<List<Integer>> perExpert = new ArrayList<>();
        for (int e = 0; e < experts.size(); e++) {
            perExpert.add(new ArrayList<>());
        }
        for (int i = 0; i < chosen.length; i++) {
            perExpert.get((int) chosen[i]).add(i / k);
        }
        long[] rowOf = new long[chosen.length];
        int[] offset = new int[experts.size()];
        NDList outputs = new NDList();
        NDManager m = x.getManager();
        int next = 0;
        List<Mlp> used = new ArrayList<>();
        NDList hidden = new NDList();
        for (int e = 0; e < experts.size(); e++) {
            List<Integer> ids = perExpert.get(e);
            offset[e] = next;
            next += ids.size();
            if (ids.isEmpty()) {
                continue;
            }
            long[] idx = ids.stream().mapToLong(Integer::longValue).toArray();
            used.add(experts.get(e));
            hidden.add(used.get(used.size() - 1).up(tokens.get(m.create(idx))));
        }
        NDList activated = activate(used, hidden, routing.weights());
        for (int i = 0; i < used.size(); i++) {
            outputs.add(used.get(i).down(activated.get(i)));
        }
        int[] seen = new int[experts.size()];
        for (int i = 0; i < chosen.length; i++) {
            int e = (int) chosen[i];
            rowOf[i] = offset[e] + seen[e]++;
        }
        NDArray all = outputs.size() == 1 ? outputs.get(0) : NDArrays.concat(outputs);
        NDArray rows = m.create(rowOf, new Shape(numTokens, k));
        NDArray weights = Cast.to(activated.get(used.size()), x.getDataType()); // [T, k]
        NDArray out = null;
        for (int j = 0; j < k; j++) {
            NDArray slot = all.get(rows.get(":, " + j)).mul(weights.get(":, " + j + ":" + (j + 1)));
            out = out == null ? slot : out.add(slot);
        }
        return out.reshape(shape);
    }

    /**
     * Every used expert's activation, recomputed in backward under {@code moe_act}; the router
     * weights (still needed by the combine) pass through as the last element.
     */
    private NDList activate(List<Mlp> used, NDList hidden, NDArray weights) {
        Function<NDList, NDList> fn = in -> {
            NDList out = new NDList(in.size());
            for (int i = 0; i < used.size(); i++) {
                out.add(used.get(i).activate(in.get(i)));
            }
            out.add(in.get(used.size()));
            return out;
        };
        NDList in = new NDList(hidden);
        in.add(weights);
        return recomputeActivation ? tape().checkpoint(in, fn) : fn.apply(in);
    }

    /** Recomputes the experts' activations in backward ({@code --recompute-modules moe_act}). */
    public void setRecomputeActivation(boolean recompute) {
        this.recomputeActivation = recompute;
    }

    /** {@code experts.local_experts.E}. */
    private static final class ExpertsHolder extends ParallelBlock {
        final BlockList<Mlp> localExperts;

        ExpertsHolder(RankContext ctx) {
            super(ctx);
            localExperts = part("local_experts", new BlockList<>(ctx));
        }

        @Override
        public NDArray apply(NDArray x) {
            throw new UnsupportedOperationException("experts are applied by MoeLayer");
        }
    }
}
