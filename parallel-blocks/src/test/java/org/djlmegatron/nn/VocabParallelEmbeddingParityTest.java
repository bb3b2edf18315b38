package org.djlmegatron.nn;

import static org.assertj.core.api.Assertions.assertThat;
import static org.djlmegatron.ParityHarness.assertParity;

import java.util.Arrays;
import org.djlmegatron.ParityHarness.BlockCase;
import org.junit.jupiter.api.Test;

/** The vocab-parallel embedding at TP=2 and TP=4 against TP=1: output and weight gradient. */
class VocabParallelEmbeddingParityTest {

    private static final int VOCAB = 64;
    /** Token ids in every quarter of the vocabulary (so in every shard at TP=4), one repeated. */
    private static final long[] IDS = {0, 63, 15, 16, 31, 32, 47, 48, 5, 5, 20, 37, 52, 63, 1, 40};

    @Test
    void idsSpanEveryVocabShard() {
        for (int shard = 0; shard < 4; shard++) {
            long lo = shard * VOCAB / 4L;
            long hi = lo + VOCAB / 4;
            assertThat(Arrays.stream(IDS).filter(i -> i >= lo && i < hi).count())
                    .as("ids in shard %d", shard).isGreaterThanOrEqualTo(3);
        }
    }

    @Test
    void matchesSingleRank() {
        assertParity(BlockCase.onTokens(ctx -> new VocabParallelEmbedding(ctx, VOCAB, 32), IDS, 2, 8), 2, 4);
    }
}
