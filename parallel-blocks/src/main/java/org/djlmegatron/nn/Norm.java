package org.djlmegatron.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Parameter;
import org.djlmegatron.engine.Cast;
import org.djlmegatron.parallel.RankContext;

/**
 * RMSNorm or LayerNorm over the last axis, computed in fp32 as Hugging Face and Megatron do.
 * Replicated weights; under sequence parallelism their gradients are partial per rank.
 */
public final class Norm extends ParallelBlock {

    /** The two normalisations of the GPT family. */
    public enum Kind {
        RMS_NORM,
        LAYER_NORM
    }

    private final Kind kind;
    private final float eps;
    private final Parameter weight;
    private final Parameter bias;

    public Norm(RankContext ctx, Kind kind, long size, double eps, boolean sequenceParallel) {
        super(ctx);
        this.kind = kind;
        this.eps = (float) eps;
        weight = param("weight", new Shape(size), ShardLayout.REPLICATED, sequenceParallel,
                ShardedParameter.Init.ONES);
        bias = kind == Kind.LAYER_NORM
                ? param("bias", new Shape(size), ShardLayout.REPLICATED, sequenceParallel,
                        ShardedParameter.Init.ZEROS)
                : null;
    }

    @Override
    public NDArray apply(NDArray x) {
        DataType type = x.getDataType();
        NDArray h = Cast.to(x, DataType.FLOAT32);
        NDArray y;
        if (kind == Kind.RMS_NORM) {
            NDArray rms = h.square().mean(new int[] {-1}, true).add(eps).sqrt();
            y = h.div(rms).mul(value(weight, h));
        } else {
            Shape last = new Shape(h.getShape().get(h.getShape().dimension() - 1));
            y = h.getNDArrayInternal()
                    .layerNorm(h, last, value(weight, h), value(bias, h), eps)
                    .singletonOrThrow();
        }
        return Cast.to(y, type);
    }
}
