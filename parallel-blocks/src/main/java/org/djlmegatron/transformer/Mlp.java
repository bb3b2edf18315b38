package org.djlmegatron.transformer;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.nn.Activation;
import org.djlmegatron.nn.ColumnParallelLinear;
import org.djlmegatron.nn.ParallelBlock;
import org.djlmegatron.nn.RowParallelLinear;
import org.djlmegatron.parallel.RankContext;

/**
 * The transformer MLP: column-parallel {@code linear_fc1} (a fused [gate; up] for SwiGLU), the
 * activation, row-parallel {@code linear_fc2}. {@link #partial} returns the unreduced output.
 */
public final class Mlp extends ParallelBlock {

    private final TransformerConfig.Activation activation;
    private final ColumnParallelLinear fc1;
    private final RowParallelLinear fc2;

    public Mlp(RankContext ctx, TransformerConfig cfg, int ffnHidden, boolean bias, boolean sequenceParallel) {
        super(ctx);
        activation = cfg.activation();
        boolean gated = cfg.isGated();
        fc1 = part("linear_fc1", ColumnParallelLinear.builder(ctx)
                .setInFeatures(cfg.hiddenSize()).setOutFeatures(gated ? 2L * ffnHidden : ffnHidden)
                .optGated(gated).optBias(bias).build());
        fc2 = part("linear_fc2", RowParallelLinear.builder(ctx)
                .setInFeatures(ffnHidden).setOutFeatures(cfg.hiddenSize())
                .optBias(bias).optSequenceParallel(sequenceParallel).build());
    }

    /** Standalone use on a replicated input: reduces over the group and adds the bias. */
    @Override
    public NDArray apply(NDArray x) {
        NDArray in = tp.isParallel() ? tape().cut(x, tp.copyToRegion()) : x;
        return fc2.addBias(tp.reduceFromRegion(partial(in)));
    }

    /** Unreduced output for an input inside the tensor-parallel region. */
    public NDArray partial(NDArray x) {
        return fc2.partial(activate(fc1.applyInRegion(x)));
    }

    public RowParallelLinear linearFc2() {
        return fc2;
    }

    private NDArray activate(NDArray h) {
        if (activation == TransformerConfig.Activation.SWIGLU) {
            NDList halves = h.split(2, h.getShape().dimension() - 1);
            NDArray gate = halves.get(0);
            return gate.mul(Activation.sigmoid(gate)).mul(halves.get(1));
        }
        return geluTanh(h);
    }

    /** 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), GPT-2's gelu_new. */
    static NDArray geluTanh(NDArray x) {
        NDArray inner = x.add(x.pow(3).mul(0.044715f)).mul((float) Math.sqrt(2.0 / Math.PI));
        return x.mul(0.5f).mul(inner.tanh().add(1f));
    }
}
