package org.djlmegatron.transformer;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.nn.Activation;
import org.djlmegatron.autograd.Scalar;
import org.djlmegatron.engine.TorchNative;
import org.djlmegatron.nn.ColumnParallelLinear;
import org.djlmegatron.nn.ParallelBlock;
import org.djlmegatron.nn.RowParallelLinear;
import org.djlmegatron.parallel.RankContext;

/**
 * The transformer MLP: column-parallel {@code linear_fc1} (a fused [gate; up] for SwiGLU), the
 * activation, row-parallel {@code linear_fc2}. {@link #partial} returns the unreduced output.
 */
public class Mlp extends ParallelBlock {

    private final TransformerConfig.Activation activation;
    private final ColumnParallelLinear fc1;
    private final RowParallelLinear fc2;
    // cached constants: see Scalar for why not mul(Number)
    private final NDArray half;
    private final NDArray geluCubic;
    private final NDArray geluScale;

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
        half = Scalar.of(ctx.manager(), 0.5);
        geluCubic = Scalar.of(ctx.manager(), 0.044715);
        geluScale = Scalar.of(ctx.manager(), Math.sqrt(2.0 / Math.PI));
    }

    /** Standalone use on a replicated input: reduces over the group and adds the bias. */
    @Override
    public NDArray apply(NDArray x) {
        NDArray in = tp.isParallel() ? tape().cut(x, tp.copyToRegion()) : x;
        return fc2.addBias(tp.reduceFromRegion(partial(in)));
    }

    /** Unreduced output for an input inside the tensor-parallel region. */
    public NDArray partial(NDArray x) {
        return down(activate(up(x)));
    }

    /** {@code linear_fc1} on an input inside the tensor-parallel region. */
    public NDArray up(NDArray x) {
        return fc1.applyInRegion(x);
    }

    /** {@code linear_fc2}, unreduced. */
    public NDArray down(NDArray a) {
        return fc2.partial(a);
    }

    public RowParallelLinear linearFc2() {
        return fc2;
    }

    public ColumnParallelLinear linearFc1() {
        return fc1;
    }

    /** The activation (SwiGLU on the fused [gate; up], or GPT-2's tanh GELU). */
    public NDArray activate(NDArray h) {
        if (activation == TransformerConfig.Activation.SWIGLU) {
            NDList halves = h.split(2, h.getShape().dimension() - 1);
            NDArray gate = halves.get(0);
            return gate.mul(Activation.sigmoid(gate)).mul(halves.get(1));
        }
        return geluTanh(h);
    }

    /**
     * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), GPT-2's gelu_new: libtorch's fused kernel on
     * the project's native library, the formula in DJL ops on the stock engine.
     */
    private NDArray geluTanh(NDArray x) {
        if (TorchNative.isAvailable()) {
            return TorchNative.geluTanh(x);
        }
        NDArray cube = x.mul(x).mul(x);
        NDArray inner = x.add(cube.mul(geluCubic)).mul(geluScale);
        return x.mul(half).mul(inner.tanh().add(1f));
    }
}
