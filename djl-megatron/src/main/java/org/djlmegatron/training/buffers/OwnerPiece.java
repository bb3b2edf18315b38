package org.djlmegatron.training.buffers;

import java.util.ArrayList;
import java.util.List;

/**
 * One piece of a gradient bucket under the distributed optimizer: the part of the bucket that
 * lies in data-parallel rank {@code owner}'s contiguous shard of the buffer. Reducing each piece
 * to its owner alone gives every rank the reduced gradients it updates, and no rank the ones it
 * does not (Megatron reduce-scatters each bucket over a per-bucket shard layout; here the shards
 * are contiguous 1/DP slices of the whole buffer, the checkpoints' optimizer layout, so a bucket
 * maps to one piece per shard it crosses).
 *
 * @param owner the data-parallel rank whose shard holds the piece
 * @param start first buffer element of the piece
 * @param end one past its last buffer element
 */
public record OwnerPiece(int owner, long start, long end) {

    /**
     * The pieces of bucket {@code [start, end)} of a buffer split into shards of {@code shard}
     * elements (the buffer's padded length over the group size), in owner order: every rank
     * computes the same list, so every rank issues the same reductions in the same order.
     */
    public static List<OwnerPiece> of(long start, long end, long shard) {
        if (start < 0 || end < start || shard < 1) {
            throw new IllegalArgumentException("bucket [" + start + ", " + end + ") of shards of " + shard
                    + " elements: expected 0 <= start <= end and a positive shard");
        }
        List<OwnerPiece> out = new ArrayList<>();
        for (long r = start / shard; r * shard < end; r++) {
            out.add(new OwnerPiece((int) r, Math.max(start, r * shard), Math.min(end, (r + 1) * shard)));
        }
        return out;
    }

    /** Elements in the piece. */
    public long length() {
        return end - start;
    }
}
