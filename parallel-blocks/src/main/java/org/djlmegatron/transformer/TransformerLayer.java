package org.djlmegatron.transformer;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import java.util.List;
import java.util.function.UnaryOperator;
import org.djlmegatron.autograd.Crossing;
import org.djlmegatron.moe.MoeLayer;
import org.djlmegatron.nn.Norm;
import org.djlmegatron.nn.ParallelBlock;
import org.djlmegatron.nn.RowParallelLinear;
import org.djlmegatron.parallel.RankContext;

/**
 * A pre-norm decoder layer: {@code h += attn(norm(h)); h += mlp(norm(h))}. Around each
 * sub-block the layer cuts the graph (residual crossing unchanged, the normed input entering the
 * tensor-parallel region) and reduces the partial output: all-reduce, or under sequence
 * parallelism all-gather in / reduce-scatter out along the sequence axis (1).
 */
public final class TransformerLayer extends ParallelBlock {

    private static final int SEQ_AXIS = 1;

    private final boolean sequenceParallel;
    private final Norm inputNorm;
    private final Attention attention;
    private final Norm preMlpNorm;
    private final Mlp mlp;
    private final MoeLayer moe;

    public TransformerLayer(RankContext ctx, TransformerConfig cfg, boolean sequenceParallel) {
        super(ctx);
        this.sequenceParallel = sequenceParallel && tp.isParallel();
        boolean sp = this.sequenceParallel;
        inputNorm = part("input_layernorm",
                new Norm(ctx, cfg.normalization(), cfg.hiddenSize(), cfg.normEpsilon(), sp));
        attention = part("self_attention", new Attention(ctx, cfg, sp));
        preMlpNorm = part("pre_mlp_layernorm",
                new Norm(ctx, cfg.normalization(), cfg.hiddenSize(), cfg.normEpsilon(), sp));
        if (cfg.isMoe()) {
            moe = part("mlp", new MoeLayer(ctx, cfg, sp));
            mlp = null;
        } else {
            mlp = part("mlp", new Mlp(ctx, cfg, cfg.ffnHiddenSize(), cfg.addBiasLinear(), sp));
            moe = null;
        }
    }

    /** {@code h}: {@code [b, s, hidden]}, or {@code [b, s/tp, hidden]} under sequence parallelism. */
    @Override
    public NDArray apply(NDArray h) {
        h = residualBranch(h, inputNorm, attention::partial, attention.linearProj());
        UnaryOperator<NDArray> ffn = mlp != null ? mlp::partial : moe::partial;
        return residualBranch(h, preMlpNorm, ffn, mlp != null ? mlp.linearFc2() : null);
    }

    private NDArray residualBranch(
            NDArray h, Norm norm, UnaryOperator<NDArray> branch, RowParallelLinear out) {
        NDArray x = norm.apply(h);
        if (tp.isParallel()) {
            Crossing in = sequenceParallel ? tp.gatherFromSequenceRegion(SEQ_AXIS) : tp.copyToRegion();
            NDList c = tape().cut(new NDList(h, x), List.of(Crossing.IDENTITY, in));
            h = c.get(0);
            x = c.get(1);
        }
        NDArray y = branch.apply(x);
        if (sequenceParallel) {
            NDList c = tape().cut(new NDList(h, y),
                    List.of(Crossing.IDENTITY, tp.reduceScatterToSequenceRegion(SEQ_AXIS)));
            h = c.get(0);
            y = c.get(1);
        } else {
            y = tp.reduceFromRegion(y);
        }
        if (out != null) {
            y = out.addBias(y);
        }
        return h.add(y);
    }

    /**
     * Decoding with a KV cache: {@code h [b, s, hidden]} replicated (no sequence parallelism, no
     * tape), this step's keys and values written to layer {@code layer} of {@code cache}.
     */
    public NDArray forwardCached(NDArray h, KvCache cache, int layer) {
        NDArray y = tp.reduceFromRegion(attention.partialCached(inputNorm.apply(h), cache, layer));
        h = h.add(attention.linearProj().addBias(y));
        NDArray x = preMlpNorm.apply(h);
        y = tp.reduceFromRegion(mlp != null ? mlp.partial(x) : moe.partial(x));
        return h.add(mlp != null ? mlp.linearFc2().addBias(y) : y);
    }

    public Attention attention() {
        return attention;
    }
}
