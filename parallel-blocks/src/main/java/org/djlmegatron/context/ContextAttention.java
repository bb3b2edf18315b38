package org.djlmegatron.context;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.HashMap;
import java.util.Map;
import java.util.function.UnaryOperator;
import org.djlmegatron.autograd.Tape;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.engine.Cast;

/**
 * Causal attention of this rank's queries over the whole sequence under context parallelism. The
 * exchanges are {@link Tape#function} cuts with their own backward:
 * <ul>
 *   <li>{@code all_gather}: K/V all-gathered over the group (backward: reduce-scatter of their gradients);
 *   <li>{@code p2p}: K/V blocks passed around the ring, N-1 send/recv steps (backward: the gradients
 *       travel the ring the other way, each rank adding its own); every block's partial attention
 *       and its log-sum-exp are merged by log-sum-exp weights;
 *   <li>{@code a2a}: an all-to-all turns [local sequence, all heads] into [whole sequence, heads/N]
 *       for q, k and v, attention runs on whole sequences, and a second all-to-all turns the context back.
 * </ul>
 * Masks compare global positions ({@link ContextParallel#positions}); they are cached per shape.
 */
public final class ContextAttention {

    private final ContextParallel cp;
    private final NDManager home;
    private final Map<String, NDArray> masks = new HashMap<>();

    public ContextAttention(ContextParallel cp, NDManager home) {
        this.cp = cp;
        this.home = home;
    }

    /**
     * q {@code [b, s, g, qpg, d]}, k and v {@code [b, s, g, 1, d]} of this rank's tokens to the
     * context {@code [b, s, g, qpg, d]}; {@code scale} is 1/sqrt(d). With {@code documents} (null:
     * none) a query also sees only keys of its own document ({@code --reset-attention-mask}): every
     * comm type applies it, as the causal mask, by the tokens' global sequence indices.
     */
    public NDArray core(Tape tape, NDArray q, NDArray k, NDArray v, NDArray scale, DocumentLayout documents,
            ProbsDropout dropout) {
        this.documents = documents;
        this.dropout = dropout;
        try {
            return switch (cp.commType()) {
                case ALL_GATHER -> allGather(tape, q, k, v, scale);
                case P2P -> ring(tape, q, k, v, scale);
                case A2A -> ulysses(tape, q, k, v, scale);
            };
        } finally {
            this.documents = null;
            this.dropout = null;
        }
    }

    private DocumentLayout documents; // of the call in progress
    private ProbsDropout dropout; // of the call in progress; null: none

    /**
     * Dropout of a block of the attention probabilities {@code [b, g, qpg, sq, sk]}: this TP rank's
     * heads from {@code headOffset}, queries and keys by global sequence index in a sequence of
     * {@code total} tokens, so each element gets the one-rank mask's value.
     */
    @FunctionalInterface
    public interface ProbsDropout {
        NDArray apply(NDArray probs, long headOffset, long[] queries, long[] keys, long total);
    }

    /** The dropout of a block (identity without one). */
    private UnaryOperator<NDArray> dropoutOf(long headOffset, long[] queries, long[] keys, long total) {
        ProbsDropout d = dropout;
        return d == null ? p -> p : p -> d.apply(p, headOffset, queries, keys, total);
    }

    private NDArray allGather(Tape tape, NDArray q, NDArray k, NDArray v, NDArray scale) {
        ProcessGroup g = cp.group();
        long s = q.getShape().get(1);
        NDList live = new NDList(q);
        NDList kv;
        try (Tape.Carry c = tape.carry(live)) {
            kv = tape.function(new NDList(k, v),
                    in -> new NDList(g.allGather(in.get(0), 1), g.allGather(in.get(1), 1)),
                    grads -> new NDList(g.reduceScatter(grads.get(0), 1, ReduceOp.SUM),
                            g.reduceScatter(grads.get(1), 1, ReduceOp.SUM)));
        }
        long[] qPos = cp.positions(s);
        long[] kPos = cp.allPositions(s);
        NDArray mask = mask("ag", qPos, kPos);
        return softmaxAttention(live.get(0), kv.get(0), kv.get(1), mask, scale,
                dropoutOf(0, qPos, kPos, s * cp.size()));
    }

    private NDArray ring(Tape tape, NDArray q, NDArray k, NDArray v, NDArray scale) {
        int n = cp.size();
        long s = q.getShape().get(1);
        NDList live = new NDList(q);
        NDList blocks;
        try (Tape.Carry c = tape.carry(live)) {
            blocks = tape.function(new NDList(k, v), this::ringForward, this::ringAdjoint);
        }
        // block i came from rank r - i
        NDArray out = null;
        NDArray lse = null;
        long[] qPos = cp.positions(s);
        NDArray qt = Cast.to(live.get(0).transpose(0, 2, 3, 1, 4).mul(scale), DataType.FLOAT32);
        for (int i = 0; i < n; i++) {
            int src = Math.floorMod(cp.rank() - i, n);
            long[] kPos = cp.positions(src, s);
            NDArray mask = mask("ring" + src, qPos, kPos);
            NDArray[] part = partialAttention(qt, blocks.get(i), blocks.get(n + i), mask,
                    dropoutOf(0, qPos, kPos, s * n));
            if (out == null) {
                out = part[0];
                lse = part[1];
            } else {
                // merge by log-sum-exp: weights exp(lse_i - lse_new)
                NDArray top = NDArrays.maximum(lse, part[1]).stopGradient();
                NDArray merged = lse.sub(top).exp().add(part[1].sub(top).exp()).log().add(top);
                out = out.mul(lse.sub(merged).exp()).add(part[0].mul(part[1].sub(merged).exp()));
                lse = merged;
            }
        }
        return Cast.to(out, q.getDataType()).transpose(0, 3, 1, 2, 4); // [b, s, g, qpg, d]
    }

    /** (k, v) to (k_0..k_{n-1}, v_0..v_{n-1}): block i is rank (r - i)'s, received over i ring steps. */
    private NDList ringForward(NDList in) {
        int n = cp.size();
        NDList ks = new NDList(n);
        NDList vs = new NDList(n);
        ks.add(in.get(0));
        vs.add(in.get(1));
        for (int i = 1; i < n; i++) {
            ks.add(shift(ks.get(i - 1), 1));
            vs.add(shift(vs.get(i - 1), 1));
        }
        NDList out = new NDList(ks);
        out.addAll(vs);
        return out;
    }

    /** The ring's transpose: block i's gradient goes back i steps, each rank adding its own on the way. */
    private NDList ringAdjoint(NDList grads) {
        int n = cp.size();
        NDArray gk = grads.get(n - 1);
        NDArray gv = grads.get(2 * n - 1);
        for (int i = n - 1; i >= 1; i--) {
            gk = shift(gk, -1).add(grads.get(i - 1));
            gv = shift(gv, -1).add(grads.get(n + i - 1));
        }
        return new NDList(gk, gv);
    }

    /**
     * Sends {@code x} {@code direction} steps along the ring (+1: to rank r+1) and returns what the
     * opposite neighbour sent. Even ranks send first and odd ranks receive first, so a blocking send
     * cannot deadlock the ring.
     */
    private NDArray shift(NDArray x, int direction) {
        ProcessGroup g = cp.group();
        int n = g.size();
        int to = Math.floorMod(g.rank() + direction, n);
        int from = Math.floorMod(g.rank() - direction, n);
        NDArray got;
        if (g.rank() % 2 == 0) {
            g.send(x, to);
            got = g.recv(x.getManager(), x.getShape(), x.getDataType(), from);
        } else {
            got = g.recv(x.getManager(), x.getShape(), x.getDataType(), from);
            g.send(x, to);
        }
        return got;
    }

    private NDArray ulysses(Tape tape, NDArray q, NDArray k, NDArray v, NDArray scale) {
        Shape qs = q.getShape();
        long b = qs.get(0);
        long s = qs.get(1);
        long g = qs.get(2);
        long qpg = qs.get(3);
        long d = qs.get(4);
        long heads = g * qpg;
        if (heads % cp.size() != 0) {
            throw new IllegalArgumentException("--cp-comm-type a2a needs the " + heads + " attention heads of a "
                    + "tensor-parallel rank divisible by --context-parallel-size " + cp.size());
        }
        // every query head gets its own copy of its group's key/value head, then heads are split over ranks
        NDArray ke = k.broadcast(qs).reshape(b, s, heads, d);
        NDArray ve = v.broadcast(qs).reshape(b, s, heads, d);
        NDArray qh = q.reshape(b, s, heads, d);
        ProcessGroup group = cp.group();
        NDList whole = tape.function(new NDList(qh, ke, ve),
                in -> new NDList(group.allToAll(in.get(0), 2, 1), group.allToAll(in.get(1), 2, 1),
                        group.allToAll(in.get(2), 2, 1)),
                gr -> new NDList(group.allToAll(gr.get(0), 1, 2), group.allToAll(gr.get(1), 1, 2),
                        group.allToAll(gr.get(2), 1, 2)));
        long h = heads / cp.size();
        long total = s * cp.size();
        long[] pos = cp.allPositions(s);
        NDArray mask = mask("a2a", pos, pos);
        // this rank holds heads [rank * h, (rank + 1) * h) of the TP rank's (the all-to-all's chunk r)
        NDArray context = softmaxAttention(whole.get(0).reshape(b, total, h, 1, d),
                whole.get(1).reshape(b, total, h, 1, d), whole.get(2).reshape(b, total, h, 1, d), mask, scale,
                dropoutOf(cp.rank() * h, pos, pos, total));
        NDArray back = tape.function(new NDList(context.reshape(b, total, h, d)),
                in -> new NDList(group.allToAll(in.get(0), 1, 2)),
                gr -> new NDList(group.allToAll(gr.get(0), 2, 1))).get(0);
        return back.reshape(b, s, g, qpg, d);
    }

    /** softmax(q k^T scale + mask) v for q {@code [b, sq, g, qpg, d]}, k, v {@code [b, sk, g, 1, d]}. */
    private static NDArray softmaxAttention(NDArray q, NDArray k, NDArray v, NDArray mask, NDArray scale,
            UnaryOperator<NDArray> dropout) {
        NDArray scores = scores(q, k, mask, scale);
        NDArray probs = dropout.apply(Cast.to(scores.softmax(-1), q.getDataType()));
        return probs.matMul(v.transpose(0, 2, 3, 1, 4)).transpose(0, 3, 1, 2, 4);
    }

    /**
     * One block's attention for queries {@code qt [b, g, qpg, sq, d]} already scaled by 1/sqrt(d):
     * the normalized output {@code [b, g, qpg, sq, d]} (fp32) and its log-sum-exp
     * {@code [b, g, qpg, sq, 1]}. A query row the block masks entirely gets a log-sum-exp near
     * -1e30, so its merge weight is 0. Few [sq, sk] temporaries: every one is held until backward.
     * Dropout masks the unnormalised weights: the merge rescales each block by its share of the
     * whole row's sum, so that is dropout of the whole row's probabilities.
     */
    private static NDArray[] partialAttention(NDArray qt, NDArray k, NDArray v, NDArray mask,
            UnaryOperator<NDArray> dropout) {
        NDArray scores = qt.matMul(Cast.to(k, DataType.FLOAT32).transpose(0, 2, 3, 4, 1)).add(mask);
        NDArray top = scores.stopGradient().max(new int[] {-1}, true);
        NDArray e = scores.sub(top).exp();
        NDArray sum = e.sum(new int[] {-1}, true);
        NDArray out = dropout.apply(e).matMul(Cast.to(v, DataType.FLOAT32).transpose(0, 2, 3, 1, 4)).div(sum);
        return new NDArray[] {out, sum.log().add(top)};
    }

    /** fp32 scores {@code [b, g, qpg, sq, sk]} with the additive mask. */
    private static NDArray scores(NDArray q, NDArray k, NDArray mask, NDArray scale) {
        NDArray qt = q.transpose(0, 2, 3, 1, 4);
        NDArray kt = k.transpose(0, 2, 3, 4, 1);
        return Cast.to(qt.matMul(kt).mul(scale), DataType.FLOAT32).add(mask);
    }

    /**
     * [sq, sk] additive mask: -1e30 where the key's global position is after the query's; with a
     * document layout, [b, 1, 1, sq, sk] and also -1e30 across documents.
     */
    private NDArray mask(String key, long[] qPos, long[] kPos) {
        if (documents != null) {
            return documents.additiveMask("cp-" + key, qPos, kPos);
        }
        String k = key + ":" + qPos.length + ":" + kPos.length;
        NDArray cached = masks.get(k);
        if (cached != null) {
            return cached;
        }
        float[] m = new float[qPos.length * kPos.length];
        for (int i = 0; i < qPos.length; i++) {
            for (int j = 0; j < kPos.length; j++) {
                m[i * kPos.length + j] = kPos[j] > qPos[i] ? -1e30f : 0f;
            }
        }
        NDArray mask = home.create(m, new Shape(qPos.length, kPos.length));
        masks.put(k, mask);
        return mask;
    }
}
