package org.djlmegatron.bridge.convert;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.List;
import org.djlmegatron.nn.ShardLayout;

/**
 * Tensor-parallel splitting and joining on raw bytes, with the same layouts as
 * {@link org.djlmegatron.nn.ShardedParameter}: rows, columns, the gated {@code [gate; up]} rows
 * where rank r holds {@code [gate_r; up_r]}, or replicated.
 */
public final class TpSharding {

    private TpSharding() {}

    /** Rank {@code rank}'s shard of {@code full}. */
    public static HostTensor shard(HostTensor full, ShardLayout layout, int rank, int size) {
        if (size == 1 || layout == ShardLayout.REPLICATED) {
            return full;
        }
        long[] shape = full.shape();
        byte[] d = full.data();
        switch (layout) {
            case SPLIT_ROWS -> {
                int part = d.length / size;
                shape[0] /= size;
                return new HostTensor(full.dtype(), shape, Arrays.copyOfRange(d, rank * part, (rank + 1) * part));
            }
            case SPLIT_ROWS_GATED -> {
                int half = d.length / 2;
                int part = half / size;
                byte[] out = new byte[2 * part];
                System.arraycopy(d, rank * part, out, 0, part);
                System.arraycopy(d, half + rank * part, out, part, part);
                shape[0] /= size;
                return new HostTensor(full.dtype(), shape, out);
            }
            default -> { // SPLIT_COLUMNS
                int rows = (int) shape[0];
                int rowBytes = d.length / rows;
                int part = rowBytes / size;
                byte[] out = new byte[rows * part];
                for (int r = 0; r < rows; r++) {
                    System.arraycopy(d, r * rowBytes + rank * part, out, r * part, part);
                }
                shape[1] /= size;
                return new HostTensor(full.dtype(), shape, out);
            }
        }
    }

    /**
     * Rank {@code rank}'s shard as little-endian bytes: a view of {@code full} where the shard is
     * contiguous in it (rows, replicated), a copy otherwise. What writers use to avoid copying.
     */
    public static ByteBuffer shardBytes(HostTensor full, ShardLayout layout, int rank, int size) {
        if (size == 1 || layout == ShardLayout.REPLICATED) {
            return full.buffer();
        }
        if (layout == ShardLayout.SPLIT_ROWS) {
            int part = full.data().length / size;
            return ByteBuffer.wrap(full.data(), rank * part, part).slice().order(ByteOrder.LITTLE_ENDIAN);
        }
        return shard(full, layout, rank, size).buffer();
    }

    /** The full tensor from every rank's shard, in rank order: the inverse of {@link #shard}. */
    public static HostTensor assemble(List<HostTensor> shards, ShardLayout layout) {
        int size = shards.size();
        HostTensor first = shards.get(0);
        if (size == 1 || layout == ShardLayout.REPLICATED) {
            return first;
        }
        long[] shape = first.shape();
        for (HostTensor s : shards) {
            if (!Arrays.equals(s.shape(), shape) || s.dtype() != first.dtype()) {
                throw new CheckpointException("tensor-parallel shards disagree: " + first + " and " + s);
            }
        }
        int part = first.data().length;
        byte[] out = new byte[part * size];
        switch (layout) {
            case SPLIT_ROWS -> {
                for (int r = 0; r < size; r++) {
                    System.arraycopy(shards.get(r).data(), 0, out, r * part, part);
                }
                shape[0] *= size;
            }
            case SPLIT_ROWS_GATED -> {
                int half = part / 2;
                for (int r = 0; r < size; r++) {
                    byte[] s = shards.get(r).data();
                    System.arraycopy(s, 0, out, r * half, half);
                    System.arraycopy(s, half, out, size * half + r * half, half);
                }
                shape[0] *= size;
            }
            default -> { // SPLIT_COLUMNS
                int rows = (int) shape[0];
                int rowPart = part / rows;
                for (int r = 0; r < size; r++) {
                    byte[] s = shards.get(r).data();
                    for (int row = 0; row < rows; row++) {
                        System.arraycopy(s, row * rowPart, out, row * rowPart * size + r * rowPart, rowPart);
                    }
                }
                shape[1] *= size;
            }
        }
        return new HostTensor(first.dtype(), shape, out);
    }

    /** The shape of one shard. */
    public static long[] shardShape(long[] full, ShardLayout layout, int size) {
        long[] s = full.clone();
        switch (layout) {
            case SPLIT_ROWS, SPLIT_ROWS_GATED -> s[0] /= size;
            case SPLIT_COLUMNS -> s[1] /= size;
            default -> { }
        }
        return s;
    }
}
