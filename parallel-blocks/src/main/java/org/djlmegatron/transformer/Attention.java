package org.djlmegatron.transformer;

import org.djlmegatron.context.DocumentLayout;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import org.djlmegatron.autograd.RandomKey;
import org.djlmegatron.autograd.Scalar;
import org.djlmegatron.context.ContextAttention;
import org.djlmegatron.context.ContextParallel;
import org.djlmegatron.engine.Cast;
import org.djlmegatron.engine.TorchNative;
import org.djlmegatron.nn.ColumnParallelLinear;
import org.djlmegatron.nn.Norm;
import org.djlmegatron.nn.PositionalDropout;
import org.djlmegatron.nn.ParallelBlock;
import org.djlmegatron.nn.RowParallelLinear;
import org.djlmegatron.parallel.RankContext;

/**
 * Causal self-attention (MHA or GQA) with Megatron-Core's fused q/k/v projection: the weight's
 * rows are grouped per key/value head as [q heads of the group; k; v], so a contiguous TP shard
 * holds whole groups. Optional q/k/v bias, per-head q/k RMSNorm and rotary positions.
 * {@link #partial} returns the unreduced output projection; the layer reduces it.
 */
public final class Attention extends ParallelBlock {

    private final TransformerConfig cfg;
    private final ColumnParallelLinear linearQkv;
    private final RowParallelLinear linearProj;
    private final Norm qNorm;
    private final Norm kNorm;
    private final RotaryEmbedding rope;
    private final int localGroups;
    private final NDArray scale; // 1/sqrt(head dim); a cached Scalar, not mul(Number)
    private final int layerNumber;
    private AttentionBackend backend = AttentionBackend.AUTO.resolve();
    private boolean recomputeCore;
    private PositionalDropout dropout = new PositionalDropout(0, 0);
    private ContextParallel cp;
    private ContextAttention cpAttention;
    private DocumentLayout documents;

    public Attention(RankContext ctx, TransformerConfig cfg, boolean sequenceParallel) {
        this(ctx, cfg, sequenceParallel, 0);
    }

    /** The attention of layer {@code layerNumber} (0-based, global): it numbers the dropout masks. */
    public Attention(RankContext ctx, TransformerConfig cfg, boolean sequenceParallel, int layerNumber) {
        super(ctx);
        this.cfg = cfg;
        this.layerNumber = layerNumber;
        int tpSize = tp.group().size();
        if (cfg.numQueryGroups() % tpSize != 0) {
            throw new IllegalArgumentException("tensor-parallel size " + tpSize + " does not divide the "
                    + cfg.numQueryGroups() + " key/value heads (num_query_groups)");
        }
        localGroups = cfg.numQueryGroups() / tpSize;
        scale = Scalar.of(ctx.manager(), 1.0 / Math.sqrt(cfg.kvChannels()));
        int width = cfg.numAttentionHeads() * cfg.kvChannels();
        linearQkv = part("linear_qkv", ColumnParallelLinear.builder(ctx)
                .setInFeatures(cfg.hiddenSize()).setOutFeatures(cfg.qkvRows())
                .optBias(cfg.addQkvBias()).build());
        if (cfg.qkLayernorm()) {
            qNorm = part("q_layernorm", new Norm(ctx, Norm.Kind.RMS_NORM, cfg.kvChannels(),
                    cfg.normEpsilon(), tp.isParallel()));
            kNorm = part("k_layernorm", new Norm(ctx, Norm.Kind.RMS_NORM, cfg.kvChannels(),
                    cfg.normEpsilon(), tp.isParallel()));
        } else {
            qNorm = null;
            kNorm = null;
        }
        linearProj = part("linear_proj", RowParallelLinear.builder(ctx)
                .setInFeatures(width).setOutFeatures(cfg.hiddenSize())
                .optBias(cfg.addBiasLinear()).optSequenceParallel(sequenceParallel).build());
        rope = cfg.positionEmbedding() == TransformerConfig.PositionEmbedding.ROPE
                ? new RotaryEmbedding(cfg.kvChannels(), cfg.rotaryBase(), cfg.ropeScaling())
                : null;
    }

    /** Standalone use on a replicated input: reduces over the group and adds the bias. */
    @Override
    public NDArray apply(NDArray x) {
        NDArray in = tp.isParallel() ? tape().cut(x, tp.copyToRegion()) : x;
        return linearProj.addBias(tp.reduceFromRegion(partial(in)));
    }

    /**
     * Each group's {@code qpg} query heads, key and value from {@code [b, s, g, qpg + 2, d]}: one
     * split, whose backward is one concatenation (three slices would each zero and fill a gradient
     * of the whole tensor).
     */
    private static NDList splitQkv(NDArray qkv, int qpg) {
        return qkv.split(new long[] {qpg, qpg + 1}, 3);
    }

    /** Unreduced attention output {@code [b, s, hidden]} for a full-sequence input in region. */
    public NDArray partial(NDArray x) {
        long b = x.getShape().get(0);
        long s = x.getShape().get(1);
        int qpg = cfg.headsPerGroup();
        int d = cfg.kvChannels();
        NDArray qkv = linearQkv.applyInRegion(x).reshape(b, s, localGroups, qpg + 2, d);
        NDList split = splitQkv(qkv, qpg);
        NDArray q = split.get(0); // [b, s, g, qpg, d]
        NDArray k = split.get(1); // [b, s, g, 1, d]
        NDArray v = split.get(2);
        if (qNorm != null) {
            q = qNorm.apply(q);
            k = kNorm.apply(k);
        }
        DocumentLayout docs = documents; // this forward's: a recomputation in backward must see the same
        if (rope != null) {
            NDManager m = ctx.manager();
            if (docs != null && docs.resetsPositions()) {
                NDArray positions = docs.positionIds(cp != null ? cp.positions(s) : DocumentLayout.range(s));
                q = rope.applyAt(q, positions);
                k = rope.applyAt(k, positions);
            } else if (cp != null) {
                long[] positions = cp.positions(s);
                q = rope.apply(m, q, positions);
                k = rope.apply(m, k, positions);
            } else {
                q = rope.apply(m, q);
                k = rope.apply(m, k);
            }
        }
        NDArray context = recomputeCore
                ? tape().checkpoint(new NDList(q, k, v), in -> new NDList(core(in.get(0), in.get(1), in.get(2), docs))).get(0)
                : core(q, k, v, docs);
        return linearProj.partial(context.reshape(b, s, (long) localGroups * qpg * d));
    }

    /**
     * softmax(q k^T / sqrt(d) + causal) v. The fused kernel draws its own dropout mask from
     * libtorch's generator, so with attention dropout active the composed path applies ours; the
     * native library's kernel is causal only, so a document mask also takes the composed path.
     */
    private NDArray core(NDArray q, NDArray k, NDArray v, DocumentLayout docs) {
        DocumentLayout mask = docs != null && docs.masksDocuments() ? docs : null;
        if (cpAttention != null) {
            RandomKey key = tape().key();
            long firstHead = (long) localGroups * cfg.headsPerGroup() * tp.group().rank();
            ContextAttention.ProbsDropout probsDropout = !dropout.active(key) ? null
                    : (p, offset, queries, keys, total) -> dropout.probabilities(p, key, layerNumber, firstHead + offset,
                            queries, keys, total);
            return cpAttention.core(tape(), q, k, v, scale, mask, probsDropout);
        }
        boolean ourDropout = dropout.active(tape().key());
        return backend == AttentionBackend.FUSED && !ourDropout && mask == null ? fused(q, k, v) : unfused(q, k, v, mask);
    }

    /**
     * The document structure of the micro-batch about to run ({@code --reset-position-ids},
     * {@code --reset-attention-mask}; null: none): position ids for RoPE, a document-causal mask.
     */
    public void setDocuments(DocumentLayout documents) {
        this.documents = documents;
    }

    /** Recomputes the core attention (softmax(QK^T)V) in backward instead of keeping its activations. */
    public void setRecomputeCore(boolean recompute) {
        this.recomputeCore = recompute;
    }

    /**
     * Context parallelism: the input holds this rank's two chunks of the sequence; attention
     * exchanges keys and values over the context group ({@link ContextAttention}).
     */
    public void setContextParallel(ContextParallel cp) {
        this.cp = cp;
        this.cpAttention = cp == null ? null : new ContextAttention(cp, ctx.manager());
    }

    /**
     * The global sequence indices of the tokens of a local sequence of {@code localLength} under
     * context parallelism (this rank's two chunks), or null without it (indices are 0..s-1).
     */
    public long[] contextIndices(long localLength) {
        return cp == null ? null : cp.positions(localLength);
    }

    /** Dropout of the attention probabilities. */
    public void setDropout(PositionalDropout dropout) {
        this.dropout = dropout;
    }

    /**
     * Decoding with a KV cache: the unreduced output for this step's tokens {@code x [b, s, hidden]}
     * (in region, no sequence parallelism) at positions {@code cache.length() ..}. Their keys and
     * values are written to layer {@code layer} of the cache, and each query attends to every cached
     * position up to its own. Always composed attention: the fused kernel's causal mask assumes
     * queries and keys start at the same position.
     */
    public NDArray partialCached(NDArray x, KvCache cache, int layer) {
        long b = x.getShape().get(0);
        long s = x.getShape().get(1);
        int qpg = cfg.headsPerGroup();
        int d = cfg.kvChannels();
        NDArray qkv = linearQkv.applyInRegion(x).reshape(b, s, localGroups, qpg + 2, d);
        NDList split = splitQkv(qkv, qpg);
        NDArray q = split.get(0); // [b, s, g, qpg, d]
        NDArray k = split.get(1); // [b, s, g, 1, d]
        NDArray v = split.get(2);
        if (qNorm != null) {
            q = qNorm.apply(q);
            k = kNorm.apply(k);
        }
        long start = cache.length();
        if (rope != null) {
            q = rope.applyFrom(ctx.manager(), q, start, cache.capacity());
            k = rope.applyFrom(ctx.manager(), k, start, cache.capacity());
        }
        NDArray[] kv = cache.append(layer, k, v);
        NDArray qt = q.transpose(0, 2, 3, 1, 4); // [b, g, qpg, s, d]
        NDArray kt = kv[0].transpose(0, 2, 3, 4, 1); // [b, g, 1, d, start + s]
        NDArray vt = kv[1].transpose(0, 2, 3, 1, 4);
        NDArray scores = qt.matMul(kt).mul(scale);
        if (s > 1) {
            scores = scores.add(offsetCausalMask(x.getManager(), start, s));
        }
        NDArray probs = Cast.to(Cast.to(scores, DataType.FLOAT32).softmax(-1), q.getDataType());
        NDArray context = probs.matMul(vt).transpose(0, 3, 1, 2, 4); // [b, s, g, qpg, d]
        return linearProj.partial(context.reshape(b, s, (long) localGroups * qpg * d));
    }

    /** [s, start + s] additive mask: query i (position start + i) sees keys 0 .. start + i. */
    private static NDArray offsetCausalMask(NDManager m, long start, long s) {
        NDArray keyPos = m.arange(0, (int) (start + s), 1, DataType.INT64);
        NDArray queryPos = m.arange((int) start, (int) (start + s), 1, DataType.INT64);
        NDArray above = keyPos.expandDims(0).gt(queryPos.expandDims(1));
        return above.toType(DataType.FLOAT32, false).mul(-1e30f);
    }

    /** Chooses the backend (resolved now: FUSED without the native library is refused here). */
    public void setBackend(AttentionBackend backend) {
        this.backend = backend.resolve();
    }

    public AttentionBackend backend() {
        return backend;
    }

    /** q {@code [b, s, g, qpg, d]}, k and v {@code [b, s, g, 1, d]} to the context {@code [b, s, g, qpg, d]}. */
    private NDArray fused(NDArray q, NDArray k, NDArray v) {
        Shape qs = q.getShape(); // heads ordered group by group: each key/value head serves qpg consecutive ones
        long b = qs.get(0);
        long s = qs.get(1);
        long g = qs.get(2);
        long qpg = qs.get(3);
        long d = qs.get(4);
        NDArray qh = q.transpose(0, 2, 3, 1, 4).reshape(b, g * qpg, s, d);
        NDArray kh = k.transpose(0, 2, 3, 1, 4).reshape(b, g, s, d);
        NDArray vh = v.transpose(0, 2, 3, 1, 4).reshape(b, g, s, d);
        NDArray out = TorchNative.scaledDotProductAttention(qh, kh, vh, true, 1.0 / Math.sqrt(d));
        return out.reshape(b, g, qpg, s, d).transpose(0, 3, 1, 2, 4);
    }

    private NDArray unfused(NDArray q, NDArray k, NDArray v, DocumentLayout documentMask) {
        long s = q.getShape().get(1);
        // [b, g, heads-in-group, s, d]: keys and values broadcast over the group's query heads
        NDArray qt = q.transpose(0, 2, 3, 1, 4);
        NDArray kt = k.transpose(0, 2, 3, 4, 1); // [b, g, 1, d, s]
        NDArray vt = v.transpose(0, 2, 3, 1, 4);
        NDArray mask = documentMask == null ? causalMask(s)
                : documentMask.additiveMask("self", DocumentLayout.range(s), DocumentLayout.range(s));
        NDArray scores = qt.matMul(kt).mul(scale).add(mask);
        NDArray probs = Cast.to(Cast.to(scores, DataType.FLOAT32).softmax(-1), q.getDataType());
        long heads = qt.getShape().get(1) * qt.getShape().get(2);
        probs = dropout.probabilities(probs, tape().key(), layerNumber, heads * tp.group().rank());
        return probs.matMul(vt).transpose(0, 3, 1, 2, 4); // [b, s, g, qpg, d]
    }

    public RowParallelLinear linearProj() {
        return linearProj;
    }

    private NDArray cachedMask;

    /** [s, s] additive mask: 0 on and below the diagonal, -1e30 above (exp underflows to 0). */
    private NDArray causalMask(long s) {
        if (cachedMask == null || cachedMask.getShape().get(0) != s) {
            if (cachedMask != null) {
                cachedMask.close();
            }
            NDManager m = ctx.manager();
            try (NDManager tmp = m.newSubManager()) {
                NDArray idx = tmp.arange(0, (int) s, 1, DataType.INT64);
                NDArray above = idx.expandDims(0).gt(idx.expandDims(1)); // column > row
                cachedMask = above.toType(DataType.FLOAT32, false).mul(-1e30f);
                cachedMask.attach(m);
            }
        }
        return cachedMask;
    }
}
