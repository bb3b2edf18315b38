package org.djlmegatron.transformer;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;

/**
 * Rotary position embedding in the "rotate half" form used by Hugging Face Llama and
 * Megatron-Core (non-interleaved): {@code x * cos + rotate_half(x) * sin}. Frequencies are
 * computed in fp32 exactly as Hugging Face does, then scaled ({@link RopeScaling}) when the model
 * has rope scaling; tables are cached per sequence length.
 */
public final class RotaryEmbedding {

    private final int dim;
    private final double base;
    private final RopeScaling scaling;
    private long cachedLength = -1;
    private NDArray cos;
    private NDArray sin;

    public RotaryEmbedding(int dim, double base) {
        this(dim, base, null);
    }

    /** With {@code scaling} applied to the inverse frequencies (null: none). */
    public RotaryEmbedding(int dim, double base, RopeScaling scaling) {
        if (dim % 2 != 0) {
            throw new IllegalArgumentException("rotary dimension must be even, found " + dim);
        }
        this.dim = dim;
        this.base = base;
        this.scaling = scaling;
    }

    /** The cos and sin tables {@code [seq, dim]} of positions 0..seq-1 (fp32, owned by this embedding). */
    public NDArray[] tables(NDManager manager, int seq) {
        tables(manager, (long) seq);
        return new NDArray[] {cos, sin};
    }

    /** The inverse frequencies {@code [dim / 2]} (fp32), scaled when the model has rope scaling. */
    public NDArray inverseFrequencies(NDManager manager) {
        NDArray exponent = manager.arange(0, dim, 2, DataType.INT64).toType(DataType.FLOAT32, false).div(dim);
        NDArray invFreq = manager.ones(new Shape(dim / 2)).div(
                manager.full(new Shape(dim / 2), (float) base).pow(exponent));
        if (scaling == null) {
            return invFreq;
        }
        try (NDArray javaBacked = manager.create(scaling.apply(invFreq.toFloatArray()))) {
            return javaBacked.duplicate(); // owns its memory
        }
    }

    /**
     * Rotates {@code x [batch, seq, ..., dim]}; the tables broadcast over the axes between the
     * sequence and the last one.
     */
    public NDArray apply(NDManager manager, NDArray x) {
        long seq = x.getShape().get(1);
        tables(manager, seq);
        int middle = x.getShape().dimension() - 3;
        NDArray c = inTypeOf(cos, x);
        NDArray s = inTypeOf(sin, x);
        for (int i = 0; i < middle; i++) {
            c = c.expandDims(1);
            s = s.expandDims(1);
        }
        return x.mul(c).add(rotateHalf(x).mul(s));
    }

    /**
     * Rotates {@code x [batch, seq, ..., dim]} as positions {@code start .. start+seq-1} (decoding
     * with a KV cache). The tables are built once for at least {@code tableLength} positions; row p
     * of a table does not depend on its length, so this equals {@link #apply} at those positions.
     */
    public NDArray applyFrom(NDManager manager, NDArray x, long start, long tableLength) {
        long seq = x.getShape().get(1);
        if (cachedLength < start + seq) {
            tables(manager, Math.max(tableLength, start + seq));
        }
        NDIndex rows = new NDIndex("{}:{}", start, start + seq);
        NDArray c = cos.get(rows);
        NDArray s = sin.get(rows);
        c.attach(x.getManager()); // views of this step, not of the tables
        s.attach(x.getManager());
        c = inTypeOf(c, x);
        s = inTypeOf(s, x);
        for (int i = 0; i < x.getShape().dimension() - 3; i++) {
            c = c.expandDims(1);
            s = s.expandDims(1);
        }
        return x.mul(c).add(rotateHalf(x).mul(s));
    }

    /**
     * Rotates {@code x [batch, seq, ..., dim]} whose tokens sit at the given global positions
     * (context parallelism holds two non-adjacent chunks of the sequence).
     */
    public NDArray apply(NDManager manager, NDArray x, long[] positions) {
        if (positions != cachedPositions) {
            if (cosAt != null) {
                cosAt.close();
                sinAt.close();
            }
            try (NDManager tmp = manager.newSubManager()) {
                NDArray invFreq = inverseFrequencies(tmp);
                NDArray pos = tmp.create(positions).toType(DataType.FLOAT32, false);
                NDArray freqs = pos.expandDims(1).mul(invFreq.expandDims(0));
                NDArray emb = NDArrays.concat(new NDList(freqs, freqs), -1);
                cosAt = emb.cos();
                sinAt = emb.sin();
                cosAt.attach(manager);
                sinAt.attach(manager);
            }
            cachedPositions = positions;
        }
        int middle = x.getShape().dimension() - 3;
        NDArray c = inTypeOf(cosAt, x);
        NDArray s = inTypeOf(sinAt, x);
        for (int i = 0; i < middle; i++) {
            c = c.expandDims(1);
            s = s.expandDims(1);
        }
        return x.mul(c).add(rotateHalf(x).mul(s));
    }

    /**
     * Rotates {@code x [batch, seq, ..., dim]} whose tokens have per-row position ids
     * {@code positions [batch, seq]} (int64; {@code --reset-position-ids} restarts them at every
     * document). The same fp32 arithmetic as the tables, so a row of 0..seq-1 rotates as {@link #apply}.
     */
    public NDArray applyAt(NDArray x, NDArray positions) {
        NDManager m = x.getManager();
        NDArray invFreq = inverseFrequencies(m);
        NDArray freqs = positions.toType(DataType.FLOAT32, false).expandDims(2)
                .mul(invFreq.expandDims(0).expandDims(0)); // [b, s, dim/2]
        NDArray emb = NDArrays.concat(new NDList(freqs, freqs), -1);
        NDArray c = inTypeOf(emb.cos(), x);
        NDArray s = inTypeOf(emb.sin(), x);
        for (int i = 0; i < x.getShape().dimension() - 3; i++) {
            c = c.expandDims(2);
            s = s.expandDims(2);
        }
        return x.mul(c).add(rotateHalf(x).mul(s));
    }

    private long[] cachedPositions;
    private NDArray cosAt;
    private NDArray sinAt;

    /** The fp32 table in {@code x}'s dtype, as transformers uses it (a temporary of x's step). */
    private static NDArray inTypeOf(NDArray table, NDArray x) {
        if (table.getDataType() == x.getDataType()) {
            return table;
        }
        NDArray typed = table.toType(x.getDataType(), false);
        typed.attach(x.getManager());
        return typed;
    }

    private static NDArray rotateHalf(NDArray x) {
        long half = x.getShape().get(x.getShape().dimension() - 1) / 2;
        NDArray first = x.get(new NDIndex("..., :{}", half));
        NDArray second = x.get(new NDIndex("..., {}:", half));
        return NDArrays.concat(new NDList(second.neg(), first), -1);
    }

    private void tables(NDManager manager, long seq) {
        if (seq == cachedLength) {
            return;
        }
        if (cos != null) {
            cos.close();
            sin.close();
        }
        try (NDManager tmp = manager.newSubManager()) {
            NDArray invFreq = inverseFrequencies(tmp);
            NDArray positions = tmp.arange(0, (int) seq, 1, DataType.INT64)
                    .toType(DataType.FLOAT32, false);
            NDArray freqs = positions.expandDims(1).mul(invFreq.expandDims(0)); // [seq, dim/2]
            NDArray emb = NDArrays.concat(new NDList(freqs, freqs), -1); // [seq, dim]
            cos = emb.cos();
            sin = emb.sin();
            cos.attach(manager);
            sin.attach(manager);
        }
        cachedLength = seq;
    }
}
