package org.djlmegatron.moe;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Parameter;
import org.djlmegatron.engine.Cast;
import org.djlmegatron.nn.ParallelBlock;
import org.djlmegatron.nn.ShardLayout;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Softmax top-k router (Mixtral, Qwen3-MoE): probabilities over all experts in fp32, the k
 * largest kept, optionally renormalised to sum to one. Its weight is replicated; its gradient is
 * partial under tensor parallelism because the experts' outputs are.
 */
public final class TopKRouter extends ParallelBlock {

    /** Chosen experts {@code [T, k]} (int64) and their weights {@code [T, k]} (fp32). */
    public record Routing(NDArray experts, NDArray weights) {}

    private final Parameter weight;
    private final int topK;
    private final boolean renormalize;

    public TopKRouter(RankContext ctx, TransformerConfig cfg) {
        super(ctx);
        weight = param("weight", new Shape(cfg.numExperts(), cfg.hiddenSize()), ShardLayout.REPLICATED,
                tp.isParallel(), ShardedParameter.Init.NORMAL);
        topK = cfg.moeRouterTopK();
        renormalize = cfg.moeRenormalizeTopK();
    }

    /** Routes tokens {@code [T, hidden]}. */
    public Routing route(NDArray tokens) {
        NDArray logits = tokens.getNDArrayInternal().linear(tokens, value(weight, tokens), null)
                .singletonOrThrow();
        NDArray probs = Cast.to(logits, DataType.FLOAT32).softmax(-1);
        NDList top = probs.topK(topK, -1, true, true);
        NDArray w = top.get(0);
        if (renormalize) {
            w = w.div(w.sum(new int[] {-1}, true));
        }
        return new Routing(top.get(1), w);
    }

    @Override
    public NDArray apply(NDArray x) {
        throw new UnsupportedOperationException("use route()");
    }
}
