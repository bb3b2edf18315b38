package org.djlmegatron.nn;

import ai.djl.MalformedModelException;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.AbstractBlock;
import ai.djl.nn.Block;
import ai.djl.nn.Parameter;
import ai.djl.pytorch.jni.JniUtils;
import ai.djl.training.ParameterStore;
import ai.djl.util.PairList;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.djlmegatron.autograd.RegionMappings;
import org.djlmegatron.autograd.Tape;
import org.djlmegatron.engine.Cast;
import org.djlmegatron.parallel.RankContext;

/**
 * Base of the parallel layers: a DJL block that knows its rank, its tensor-parallel mappings, and
 * its parameters under Megatron-Core names with their shard layouts. Parameters get their arrays
 * from {@link #initializeRandom} or from a checkpoint (see {@link #parameters()}); one input and
 * one output tensor, exposed as {@link #apply}.
 */
public abstract class ParallelBlock extends AbstractBlock {

    protected final RankContext ctx;
    protected final RegionMappings tp;
    private final List<ShardedParameter> own = new ArrayList<>();
    private final List<ParallelBlock> parts = new ArrayList<>();
    private final List<String> partNames = new ArrayList<>();
    private DataType parameterType = DataType.FLOAT32;

    protected ParallelBlock(RankContext ctx) {
        this.ctx = ctx;
        this.tp = new RegionMappings(ctx.tensorGroup());
    }

    /** The block's computation on one tensor. */
    public abstract NDArray apply(NDArray x);

    @Override
    protected NDList forwardInternal(
            ParameterStore store, NDList inputs, boolean training, PairList<String, Object> params) {
        return new NDList(apply(inputs.singletonOrThrow()));
    }

    @Override
    public Shape[] getOutputShapes(Shape[] inputShapes) {
        return inputShapes;
    }

    /**
     * Initialised once every parameter holds its shard ({@link #initializeRandom}, a checkpoint,
     * {@code Model.load}); DJL's shape-driven initialisation does not apply to shards.
     */
    @Override
    public boolean isInitialized() {
        for (Parameter p : getParameters().values()) {
            if (!p.isInitialized()) {
                return false;
            }
        }
        return true;
    }

    /** No input description before a forward pass has set input shapes (shards need none to initialise). */
    @Override
    public PairList<String, Shape> describeInput() {
        return inputShapes == null ? new PairList<>() : super.describeInput();
    }

    /**
     * DJL's parameter files ({@code Model.save}) of a parallel block hold one rank's shards: they
     * record the block's tensor-parallel rank and size instead of input shapes, and
     * {@link #loadMetadata} refuses a file of another rank or size.
     */
    @Override
    protected void saveMetadata(DataOutputStream os) throws IOException {
        os.writeInt(tp.group().rank());
        os.writeInt(tp.group().size());
    }

    @Override
    public void loadMetadata(byte loadVersion, DataInputStream is) throws IOException, MalformedModelException {
        if (loadVersion != version) {
            throw new MalformedModelException(getClass().getSimpleName() + ": parameter file version " + loadVersion
                    + ", expected " + version);
        }
        int rank = is.readInt();
        int size = is.readInt();
        if (rank != tp.group().rank() || size != tp.group().size()) {
            throw new MalformedModelException(getClass().getSimpleName() + ": parameters saved by tensor-parallel rank "
                    + rank + " of " + size + ", loading into rank " + tp.group().rank() + " of " + tp.group().size());
        }
    }

    /** DJL's load, then each of this block's shards checked against its expected shape and made trainable. */
    @Override
    public void loadParameters(NDManager manager, DataInputStream is) throws IOException, MalformedModelException {
        super.loadParameters(manager, is);
        for (ShardedParameter sp : own) {
            NDArray a = sp.parameter().getArray();
            if (!a.getShape().equals(sp.localShape())) {
                throw new MalformedModelException(getClass().getSimpleName() + "." + sp.name() + ": loaded shape "
                        + a.getShape() + ", expected " + sp.localShape());
            }
            a.setRequiresGradient(true);
        }
    }

    /** Registers a parameter under {@code name} (relative to this block). */
    protected Parameter param(
            String name, Shape fullShape, ShardLayout layout, boolean tpPartialGrad,
            ShardedParameter.Init init) {
        Parameter p =
                Parameter.builder()
                        .setName(name)
                        .setType(init == ShardedParameter.Init.NORMAL
                                ? Parameter.Type.WEIGHT : Parameter.Type.OTHER)
                        .build();
        addParameter(p);
        own.add(new ShardedParameter(
                name, p, fullShape, layout, tp.group().rank(), tp.group().size(),
                tpPartialGrad, init));
        return p;
    }

    /** Registers a child block under a Megatron-Core name segment. */
    protected <B extends ParallelBlock> B part(String name, B block) {
        addChildBlock(name, block);
        parts.add(block);
        partNames.add(name);
        return block;
    }

    /** Every parameter of this block and its parts, named as in a Megatron-Core state dict. */
    public List<ShardedParameter> parameters() {
        List<ShardedParameter> out = new ArrayList<>(own);
        for (int i = 0; i < parts.size(); i++) {
            String prefix = partNames.get(i) + ".";
            for (ShardedParameter sp : parts.get(i).parameters()) {
                out.add(new ShardedParameter(
                        prefix + sp.name(), sp.parameter(), sp.fullShape(), sp.layout(),
                        sp.tpRank(), sp.tpSize(), sp.tpPartialGrad(), sp.init()));
            }
        }
        return out;
    }

    /**
     * Initialises every parameter from scratch: each full tensor is drawn from a generator seeded
     * by {@code seed} and the parameter name, then sharded, so any TP size gets the same model.
     */
    public void initializeRandom(long seed, float std) {
        NDManager m = ctx.manager();
        for (ShardedParameter sp : parameters()) {
            NDArray full = fullInit(m, sp, seed, std);
            installShard(sp, sp.shardOf(full).duplicate());
            full.close();
        }
    }

    /**
     * The dtype parameters are installed in (fp32 by default; fp16 for mixed precision, the
     * trainer keeps fp32 masters). Set it before {@link #initializeRandom} or loading.
     */
    public void setParameterType(DataType type) {
        parameterType = type;
    }

    public DataType parameterType() {
        return parameterType;
    }

    /** Installs {@code shard} (any float dtype) as the value of {@code sp}, in {@link #parameterType()}. */
    public void installShard(ShardedParameter sp, NDArray shard) {
        if (shard.getDataType() == parameterType) {
            setShard(sp, shard);
            return;
        }
        NDArray typed = shard.toType(parameterType, false);
        shard.close();
        setShard(sp, typed);
    }

    /** Installs this rank's shard as the parameter's value (gradient attached). */
    public static void setShard(ShardedParameter sp, NDArray shard) {
        if (!shard.getShape().equals(sp.localShape())) {
            throw new IllegalArgumentException(sp.name() + ": expected shard shape "
                    + sp.localShape() + ", found " + shard.getShape());
        }
        Parameter p = sp.parameter();
        if (p.isInitialized()) {
            // in place, so views and the autograd leaf stay valid (set(Buffer) swaps the storage)
            boolean gradMode = JniUtils.isGradMode();
            JniUtils.setGradMode(false);
            try {
                p.getArray().set(new NDIndex("..."), shard.toType(p.getArray().getDataType(), false));
            } finally {
                JniUtils.setGradMode(gradMode);
            }
            shard.close();
            return;
        }
        p.setArray(shard);
        shard.setRequiresGradient(true);
    }

    private static NDArray fullInit(NDManager m, ShardedParameter sp, long seed, float std) {
        switch (sp.init()) {
            case ZEROS:
                return m.zeros(sp.fullShape(), DataType.FLOAT32);
            case ONES:
                return m.ones(sp.fullShape(), DataType.FLOAT32);
            default:
                Random rng = new Random(seed * 1_000_003L + sp.name().hashCode());
                float[] v = new float[Math.toIntExact(sp.fullShape().size())];
                for (int i = 0; i < v.length; i++) {
                    v[i] = (float) (rng.nextGaussian() * std);
                }
                return m.create(v, sp.fullShape());
        }
    }

    @Override
    protected void initializeChildBlocks(NDManager manager, DataType dataType, Shape... shapes) {
        for (Block child : getChildren().values()) {
            child.initialize(manager, dataType, shapes);
        }
    }

    /**
     * The value of a parameter for arithmetic on {@code activation}: in the activation's dtype
     * when that is floating (fp32 arithmetic in norms and the loss), else (token ids) in the
     * parameter's compute dtype. fp16 weights compute in fp32 (the stock engine's fp16 CPU
     * kernels are slow, and it cannot cast them differentiably other than by widening), bf16
     * weights in bf16 (only on the native library). Casts keep the graph ({@link Cast}).
     */
    public static NDArray value(Parameter p, NDArray activation) {
        NDArray a = p.getArray();
        DataType act = activation.getDataType();
        DataType target = act.isFloating() ? act : a.getDataType() == DataType.FLOAT16 ? DataType.FLOAT32 : a.getDataType();
        NDArray v = Cast.to(a, target);
        if (v != a) {
            v.attach(activation.getManager()); // a temporary of this step, not of the model
        }
        return v;
    }

    /** The rank this block belongs to. */
    public RankContext rankContext() {
        return ctx;
    }

    /** The rank's tape, where cuts around collectives are recorded. */
    protected Tape tape() {
        return ctx.tape();
    }
}
