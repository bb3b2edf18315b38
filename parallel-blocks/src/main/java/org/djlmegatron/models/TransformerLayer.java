package org.djlmegatron.models;

import org.djlmegatron.transformer.Attention;
import org.djlmegatron.transformer.KvCache;
import org.djlmegatron.transformer.Mlp;
import org.djlmegatron.transformer.Recompute;
import org.djlmegatron.transformer.TransformerConfig;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import java.util.Arrays;
import java.util.function.UnaryOperator;
import org.djlmegatron.autograd.Tape;
import org.djlmegatron.moe.MoeLayer;
import org.djlmegatron.nn.Norm;
import org.djlmegatron.nn.PositionalDropout;
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

    private final int layerNumber;
    private final boolean sequenceParallel;
    private final Norm inputNorm;
    private final Attention attention;
    private final Norm preMlpNorm;
    private final Mlp mlp;
    private final MoeLayer moe;
    private Recompute recompute = Recompute.NONE;
    private PositionalDropout hiddenDropout = new PositionalDropout(0, 0);

    public TransformerLayer(RankContext ctx, TransformerConfig cfg, boolean sequenceParallel) {
        this(ctx, cfg, sequenceParallel, 0);
    }

    /** Layer {@code layerNumber} (0-based, global over pipeline stages): it numbers the dropout masks. */
    public TransformerLayer(RankContext ctx, TransformerConfig cfg, boolean sequenceParallel, int layerNumber) {
        super(ctx);
        this.layerNumber = layerNumber;
        this.sequenceParallel = sequenceParallel && tp.isParallel();
        boolean sp = this.sequenceParallel;
        inputNorm = part("input_layernorm",
                new Norm(ctx, cfg.normalization(), cfg.hiddenSize(), cfg.normEpsilon(), sp));
        attention = part("self_attention", new Attention(ctx, cfg, sp, layerNumber));
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
        UnaryOperator<NDArray> attn = attention::partial;
        h = residualBranch(h, inputNorm, attn, attention.linearProj(), PositionalDropout.Site.ATTENTION_OUTPUT);
        UnaryOperator<NDArray> ffn;
        if (mlp != null) {
            ffn = recompute.selects(Recompute.Module.MLP) ? x -> tape().checkpoint(x, mlp::partial) : mlp::partial;
        } else {
            ffn = recompute.selects(Recompute.Module.MOE) ? x -> tape().checkpoint(x, moe::partial) : moe::partial;
        }
        return residualBranch(h, preMlpNorm, ffn, mlp != null ? mlp.linearFc2() : null, PositionalDropout.Site.MLP_OUTPUT);
    }

    /**
     * {@code h + dropout(out(branch(norm(h))))}: the residual {@code h} is carried across every cut
     * the branch makes (it stays live), the normed input enters the tensor-parallel region and the
     * branch's partial output is reduced (all-reduce, or reduce-scatter under sequence parallelism).
     */
    private NDArray residualBranch(NDArray h, Norm norm, UnaryOperator<NDArray> branch, RowParallelLinear out,
            PositionalDropout.Site site) {
        NDArray x;
        if (recompute.selects(Recompute.Module.LAYERNORM)) {
            NDList r = tape().checkpoint(new NDList(h), in -> new NDList(in.get(0), norm.apply(in.get(0))));
            h = r.get(0);
            x = r.get(1);
        } else {
            x = norm.apply(h);
        }
        NDList live = new NDList(h);
        NDArray y;
        try (Tape.Carry c = tape().carry(live)) {
            if (tp.isParallel()) {
                x = tape().cut(x, sequenceParallel ? tp.gatherFromSequenceRegion(SEQ_AXIS) : tp.copyToRegion());
            }
            y = branch.apply(x);
            if (sequenceParallel) {
                y = tape().cut(y, tp.reduceScatterToSequenceRegion(SEQ_AXIS));
            }
        }
        h = live.get(0);
        if (!sequenceParallel) {
            y = tp.reduceFromRegion(y);
        }
        if (out != null) {
            y = out.addBias(y);
        }
        long length = y.getShape().get(SEQ_AXIS);
        long firstPosition = sequenceParallel ? length * tp.group().rank() : 0;
        long[] context = attention.contextIndices(sequenceParallel ? length * tp.group().size() : length);
        y = context == null ? hiddenDropout.hidden(y, tape().key(), layerNumber, site, firstPosition)
                : hiddenDropout.hidden(y, tape().key(), layerNumber, site,
                        Arrays.copyOfRange(context, (int) firstPosition, (int) (firstPosition + length)));
        return h.add(y);
    }

    /** Which activations this layer recomputes in backward. */
    public void setRecompute(Recompute recompute) {
        this.recompute = recompute;
        attention.setRecomputeCore(recompute.selects(Recompute.Module.CORE_ATTN));
        if (moe != null) {
            moe.setRecomputeActivation(recompute.selects(Recompute.Module.MOE_ACT));
        }
    }

    /** Dropout of the attention and MLP outputs ({@code hidden}) and of the attention probabilities. */
    public void setDropout(PositionalDropout hidden, PositionalDropout attentionProbs) {
        this.hiddenDropout = hidden;
        attention.setDropout(attentionProbs);
    }

    public int layerNumber() {
        return layerNumber;
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

    /** The MoE block of this layer, or null for a dense MLP. */
    public MoeLayer moe() {
        return moe;
    }

    public Attention attention() {
        return attention;
    }
}
