package org.djlmegatron.bridge.hf;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.util.Arrays;
import org.djlmegatron.io.SafetensorsReader;
import org.djlmegatron.io.TensorInfo;
import org.djlmegatron.nn.ShardedParameter;

/**
 * Reads a rank's shard of a Megatron-layout parameter out of Hugging Face tensors, touching only
 * the bytes of that shard, and checks every source tensor's full shape against the config.
 */
final class ShardReads {

    private final SafetensorsReader reader;
    private final NDManager manager;

    ShardReads(SafetensorsReader reader, NDManager manager) {
        this.reader = reader;
        this.manager = manager;
    }

    /** Same layout in both worlds: slice along the parameter's split axis. */
    NDArray direct(String hfName, ShardedParameter p) {
        expect(hfName, p.fullShape().getShape(), p);
        switch (p.layout()) {
            case SPLIT_ROWS:
                return slice(hfName, 0, p.tpRank(), p.tpSize());
            case SPLIT_COLUMNS:
                return slice(hfName, 1, p.tpRank(), p.tpSize());
            case REPLICATED:
                return reader.load(manager, hfName);
            default:
                throw new IllegalStateException(p.name() + ": layout " + p.layout());
        }
    }

    /** GPT-2's Conv1D stores {@code [in, out]}: slice along the other axis, then transpose. */
    NDArray transposed(String hfName, ShardedParameter p) {
        long[] full = p.fullShape().getShape();
        expect(hfName, new long[] {full[1], full[0]}, p);
        int axis = p.layout() == org.djlmegatron.nn.ShardLayout.SPLIT_ROWS ? 1 : 0;
        return contiguous(slice(hfName, axis, p.tpRank(), p.tpSize()).transpose());
    }

    /** Megatron's gated fc1: this rank's rows of gate, then its rows of up. */
    NDArray gated(String gate, String up, ShardedParameter p) {
        long[] half = p.fullShape().getShape().clone();
        half[0] /= 2;
        expect(gate, half, p);
        expect(up, half, p);
        return NDArrays.concat(new NDList(
                slice(gate, 0, p.tpRank(), p.tpSize()), slice(up, 0, p.tpRank(), p.tpSize())));
    }

    /**
     * Megatron's fused q/k/v: for each local key/value group, its query heads' rows, its key rows
     * and its value rows. {@code q}, {@code k}, {@code v} are row-major HF tensors ([rows, ...]).
     */
    NDArray qkv(NDArray q, NDArray k, NDArray v, int localGroups) {
        long[] tail = Arrays.copyOfRange(q.getShape().getShape(), 1, q.getShape().dimension());
        NDArray qg = q.reshape(withTail(localGroups, -1, tail));
        NDArray kg = k.reshape(withTail(localGroups, -1, tail));
        NDArray vg = v.reshape(withTail(localGroups, -1, tail));
        NDArray fused = NDArrays.concat(new NDList(qg, kg, vg), 1);
        return fused.reshape(withTail(-1, -1, tail).slice(1));
    }

    /** Rows {@code [rank*n/parts, (rank+1)*n/parts)} of {@code hfName} along {@code axis}. */
    NDArray slice(String hfName, int axis, int rank, int parts) {
        long n = info(hfName).shape()[axis];
        long chunk = n / parts;
        return reader.loadSlice(manager, hfName, axis, chunk * rank, chunk);
    }

    /** Rows {@code [start, start+length)} along axis 0. */
    NDArray rows(String hfName, long start, long length) {
        return reader.loadSlice(manager, hfName, 0, start, length);
    }

    /** Columns {@code [start, start+length)} along axis 1. */
    NDArray columns(String hfName, long start, long length) {
        return reader.loadSlice(manager, hfName, 1, start, length);
    }

    TensorInfo info(String hfName) {
        if (!reader.contains(hfName)) {
            throw new HfFormatException(reader.source() + ": tensor \"" + hfName
                    + "\" is missing (needed for the model that config.json describes)");
        }
        return reader.info(hfName);
    }

    /** Fails unless {@code hfName} has exactly the shape the config implies. */
    void expect(String hfName, long[] shape, ShardedParameter p) {
        long[] found = info(hfName).shape();
        if (!Arrays.equals(found, shape)) {
            throw new HfFormatException(reader.source() + ": tensor \"" + hfName + "\" has shape "
                    + Arrays.toString(found) + " but config.json implies " + Arrays.toString(shape)
                    + " (for " + p.name() + ")");
        }
    }

    private NDArray contiguous(NDArray x) {
        return manager.create(x.toByteBuffer(), x.getShape(), x.getDataType());
    }

    private static Shape withTail(long a, long b, long[] tail) {
        long[] dims = new long[2 + tail.length];
        dims[0] = a;
        dims[1] = b;
        System.arraycopy(tail, 0, dims, 2, tail.length);
        return new Shape(dims);
    }
}
