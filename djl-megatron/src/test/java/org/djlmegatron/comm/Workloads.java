package org.djlmegatron.comm;

import org.djlmegatron.autograd.Scalar;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.djlmegatron.autograd.RegionMappings;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;

/**
 * Deterministic per-rank work used to compare backends: each returns the raw bytes of every
 * result it produced, keyed by what it was, so two runs can be compared bit for bit.
 */
final class Workloads {

    static final List<DataType> TYPES =
            List.of(DataType.FLOAT32, DataType.FLOAT16, DataType.FLOAT64, DataType.INT32, DataType.INT64);

    private Workloads() {}

    /**
     * Every collective in every dtype over the group of {@code kind}, on inexact random inputs (so
     * that the reduction order shows), contiguous and strided; then a ring of point-to-point
     * messages.
     */
    static Map<String, byte[]> everyCollective(RankContext ctx, GroupKind kind) {
        ProcessGroup g = ctx.group(kind);
        int n = g.size();
        Map<String, byte[]> out = new LinkedHashMap<>();
        for (DataType type : TYPES) {
            try (NDManager m = ctx.manager().newSubManager()) {
                NDArray x = random(m, ctx.rank() * 31 + type.ordinal(), new Shape(3, 2 * n), type);
                // a transposed (non-contiguous) view: [2n, 3] -> split along 0
                NDArray t = random(m, ctx.rank() * 17 + type.ordinal(), new Shape(3, 2 * n), type).transpose();
                String p = type + " ";
                for (ReduceOp op : ReduceOp.values()) {
                    out.put(p + "allReduce " + op, bytes(g.allReduce(x, op)));
                }
                out.put(p + "allReduce strided", bytes(g.allReduce(t, ReduceOp.SUM)));
                out.put(p + "allGather 0", bytes(g.allGather(x, 0)));
                out.put(p + "allGather -1", bytes(g.allGather(x, -1)));
                out.put(p + "allGather strided", bytes(g.allGather(t, 1)));
                out.put(p + "reduceScatter SUM", bytes(g.reduceScatter(x, 1, ReduceOp.SUM)));
                out.put(p + "reduceScatter AVG", bytes(g.reduceScatter(x, 1, ReduceOp.AVG)));
                out.put(p + "reduceScatter MAX strided", bytes(g.reduceScatter(t, 0, ReduceOp.MAX)));
                out.put(p + "broadcast last", bytes(g.broadcast(x, n - 1)));
                out.put(p + "broadcast 0", bytes(g.broadcast(t, 0)));
                out.put(p + "reduce last", bytesOrNone(g.reduce(x, n - 1, ReduceOp.SUM)));
                out.put(p + "reduce 0 AVG strided", bytesOrNone(g.reduce(t, 0, ReduceOp.AVG)));
                out.put(p + "allToAll", bytes(g.allToAll(x, 1, 0)));
                out.put(p + "allToAll strided", bytes(g.allToAll(t, 0, 1)));
                g.barrier();
                // point-to-point: two messages around the ring, received in order
                int next = (g.rank() + 1) % n;
                int prev = (g.rank() + n - 1) % n;
                g.send(x, next);
                g.send(t, next);
                out.put(p + "recv 1", bytes(g.recv(m, x.getShape(), type, prev)));
                out.put(p + "recv 2", bytes(g.recv(m, t.getShape(), type, prev)));
            }
        }
        return out;
    }

    /**
     * A few steps of training a tiny tensor- and sequence-parallel MLP with data parallelism:
     * all-gather of the sequence in, reduce-scatter out (through the tape), a loss summed over the
     * tensor group, gradients averaged over the data group, SGD. Returns every step's loss and
     * gradients and the final weight shards.
     */
    static Map<String, byte[]> trainingLike(RankContext ctx, int steps) {
        int hidden = 8;
        int ffn = 16;
        int batch = 2;
        int seq = 8;
        ProcessGroup tpGroup = ctx.group(GroupKind.TENSOR);
        ProcessGroup dpGroup = ctx.group(GroupKind.DATA);
        int tp = tpGroup.size();
        int tpRank = tpGroup.rank();
        RegionMappings tpMap = new RegionMappings(tpGroup);
        NDManager params = ctx.manager();

        // full weights from one seed on every rank; each keeps its shard
        float[] w1Full = gaussian(1, ffn * hidden, 0.3);
        float[] w2Full = gaussian(2, hidden * ffn, 0.3);
        NDArray w1 = params.create(w1Full, new Shape(ffn, hidden)).split(tp, 0).get(tpRank).duplicate();
        NDArray w2 = params.create(w2Full, new Shape(hidden, ffn)).split(tp, 1).get(tpRank).duplicate();
        Map<String, byte[]> out = new LinkedHashMap<>();
        for (int step = 0; step < steps; step++) {
            w1.setRequiresGradient(true);
            w2.setRequiresGradient(true);
            try (NDManager m = params.newSubManager()) {
                // this data-parallel replica's batch; the tensor ranks share it and split the sequence
                int sample = step * dpGroup.size() + dpGroup.rank();
                NDArray x = m.create(gaussian(100 + sample, batch * seq * hidden, 1.0), new Shape(batch, seq, hidden));
                NDArray y = m.create(gaussian(200 + sample, batch * seq * hidden, 1.0), new Shape(batch, seq, hidden));
                NDArray xLocal = x.split(tp, 1).get(tpRank);
                NDArray yLocal = y.split(tp, 1).get(tpRank);

                NDArray full = ctx.tape().cut(xLocal, tpMap.gatherFromSequenceRegion(1)); // [b, s, h]
                NDArray h1 = full.matMul(w1.transpose()).tanh();                           // [b, s, f/tp]
                NDArray partial = h1.matMul(w2.transpose());                               // [b, s, h] partial sums
                NDArray o = ctx.tape().cut(partial, tpMap.reduceScatterToSequenceRegion(1)); // [b, s/tp, h]
                NDArray localLoss = o.sub(yLocal).square().sum().div(Scalar.of(o.getManager(), batch * seq * hidden));
                NDArray loss = tpMap.reduceFromRegion(localLoss);
                ctx.tape().backward(loss);

                NDArray g1 = dpGroup.allReduce(w1.getGradient(), ReduceOp.AVG);
                NDArray g2 = dpGroup.allReduce(w2.getGradient(), ReduceOp.AVG);
                out.put("step " + step + " loss", bytes(loss));
                out.put("step " + step + " grad w1", bytes(g1.duplicate()));
                out.put("step " + step + " grad w2", bytes(g2.duplicate()));
                NDArray next1 = w1.stopGradient().sub(g1.mul(0.5f));
                NDArray next2 = w2.stopGradient().sub(g2.mul(0.5f));
                next1.attach(params);
                next2.attach(params);
                w1.close();
                w2.close();
                w1 = next1;
                w2 = next2;
            }
        }
        out.put("final w1 (gathered)", bytes(tpGroup.allGather(w1, 0)));
        out.put("final w2 (gathered)", bytes(tpGroup.allGather(w2, 1)));
        return out;
    }

    /** Random values exact in the dtype: gaussians of varied magnitude, integers for int types. */
    static NDArray random(NDManager m, long seed, Shape shape, DataType type) {
        Random r = new Random(seed);
        int size = (int) shape.size();
        if (type == DataType.INT32 || type == DataType.INT64) {
            long[] v = new long[size];
            for (int i = 0; i < size; i++) {
                v[i] = r.nextInt(2001) - 1000;
            }
            NDArray a = m.create(v, shape);
            return type == DataType.INT64 ? a : a.toType(type, false);
        }
        double[] v = new double[size];
        for (int i = 0; i < size; i++) {
            v[i] = r.nextGaussian() * Math.pow(10, r.nextInt(5) - 2);
        }
        NDArray a = m.create(v, shape);
        return type == DataType.FLOAT64 ? a : a.toType(type, false);
    }

    static float[] gaussian(long seed, int size, double scale) {
        Random r = new Random(seed);
        float[] v = new float[size];
        for (int i = 0; i < size; i++) {
            v[i] = (float) (r.nextGaussian() * scale);
        }
        return v;
    }

    /** The array's dtype, shape and bytes (so a shape change shows too); closes it. */
    /** {@link #bytes}, or none for a null result (reduce off its root). */
    static byte[] bytesOrNone(NDArray a) {
        return a == null ? new byte[0] : bytes(a);
    }

    static byte[] bytes(NDArray a) {
        try (a) {
            byte[] data = a.toByteArray();
            byte[] head = (a.getDataType() + " " + a.getShape() + "|").getBytes(java.nio.charset.StandardCharsets.UTF_8);
            byte[] all = new byte[head.length + data.length];
            System.arraycopy(head, 0, all, 0, head.length);
            System.arraycopy(data, 0, all, head.length, data.length);
            return all;
        }
    }
}
