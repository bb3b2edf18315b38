package org.djlmegatron.training.buffers;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The pieces a bucket is reduced in under the distributed optimizer's overlap: one per data-parallel
 * shard the bucket crosses, owned by that shard's rank, in rank order, together exactly the bucket.
 */
class OwnerPieceTest {

    /** A buffer of 100 elements over DP=4: shards [0,25), [25,50), [50,75), [75,100). */
    private static final long SHARD = 25;

    @Test
    void aBucketInsideOneShardIsOnePieceOwnedByThatShardsRank() {
        assertThat(OwnerPiece.of(30, 45, SHARD)).containsExactly(new OwnerPiece(1, 30, 45));
        assertThat(OwnerPiece.of(50, 75, SHARD)).as("exactly one shard").containsExactly(new OwnerPiece(2, 50, 75));
    }

    @Test
    void aBucketAcrossTwoShardsIsCutAtTheBoundary() {
        assertThat(OwnerPiece.of(40, 60, SHARD))
                .containsExactly(new OwnerPiece(1, 40, 50), new OwnerPiece(2, 50, 60));
    }

    @Test
    void aBucketAcrossThreeShardsGivesTheMiddleRankItsWholeShard() {
        List<OwnerPiece> pieces = OwnerPiece.of(10, 60, SHARD);
        assertThat(pieces).containsExactly(new OwnerPiece(0, 10, 25), new OwnerPiece(1, 25, 50),
                new OwnerPiece(2, 50, 60));
        assertThat(pieces.stream().mapToLong(OwnerPiece::length).sum()).isEqualTo(50);
    }

    /**
     * 97 real elements padded to 100 for DP=4: bucket 0 (cut from the end, 30 elements) holds the
     * padding, which lies in the last rank's shard and is reduced with it (zeros, never read).
     */
    @Test
    void thePaddingAtTheEndBelongsToTheLastRank() {
        assertThat(OwnerPiece.of(70, 100, SHARD))
                .containsExactly(new OwnerPiece(2, 70, 75), new OwnerPiece(3, 75, 100));
    }

    /** Buckets as ParamAndGradBuffer cuts them (from the end, 30 elements) cover every shard exactly once. */
    @Test
    void theBucketsOfABufferGiveEachRankExactlyItsShard() {
        long[] owned = new long[4];
        for (long end = 100; end > 0; end -= 30) {
            for (OwnerPiece p : OwnerPiece.of(Math.max(0, end - 30), end, SHARD)) {
                assertThat(p.start()).isGreaterThanOrEqualTo(p.owner() * SHARD);
                assertThat(p.end()).isLessThanOrEqualTo((p.owner() + 1) * SHARD);
                owned[p.owner()] += p.length();
            }
        }
        assertThat(owned).containsExactly(25, 25, 25, 25);
    }

    @Test
    void anEmptyBucketHasNoPiecesAndABadOneIsRefused() {
        assertThat(OwnerPiece.of(50, 50, SHARD)).isEmpty();
        assertThatThrownBy(() -> OwnerPiece.of(60, 50, SHARD)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("bucket [60, 50)");
    }
}
