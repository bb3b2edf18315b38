package org.djlmegatron.moe;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Activation;
import ai.djl.nn.Parameter;
import org.djlmegatron.nn.ShardLayout;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.transformer.Mlp;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Megatron-Core's shared experts ({@code mlp.shared_experts}): a dense MLP of width
 * {@code moe_shared_expert_intermediate_size} that every token goes through beside its routed
 * experts, its output added to theirs. With {@code moe_shared_expert_gate} (Qwen2-MoE's
 * {@code shared_expert_gate}) the output is scaled per token by sigmoid(x . gate_weight), the
 * weight {@code [1, hidden]} replicated; it multiplies a tensor-parallel partial sum, so its
 * gradient is partial too and summed over the group like the router's.
 */
public final class SharedExpertMlp extends Mlp {

    private final Parameter gateWeight;

    public SharedExpertMlp(RankContext ctx, TransformerConfig cfg, boolean sequenceParallel) {
        super(ctx, cfg, cfg.moeSharedExpertIntermediateSize(), false, sequenceParallel);
        gateWeight = cfg.moeSharedExpertGate()
                ? param("gate_weight", new Shape(1, cfg.hiddenSize()), ShardLayout.REPLICATED, tp.isParallel(),
                        ShardedParameter.Init.NORMAL)
                : null;
    }

    /** Unreduced, gated output for an input {@code [..., hidden]} inside the tensor-parallel region. */
    @Override
    public NDArray partial(NDArray x) {
        NDArray out = super.partial(x);
        if (gateWeight == null) {
            return out;
        }
        NDArray logit = x.getNDArrayInternal().linear(x, value(gateWeight, x), null).singletonOrThrow();
        return out.mul(Activation.sigmoid(logit));
    }
}
