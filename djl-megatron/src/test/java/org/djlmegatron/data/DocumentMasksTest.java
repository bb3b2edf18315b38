package org.djlmegatron.data;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/**
 * Megatron's document masking ({@code _get_ltor_masks_and_position_ids}): a sample worked through
 * Megatron's loop by hand, and windows of the public corpus (Megatron's own preprocessing, EOD
 * appended to every document) checked against the document boundaries of its index.
 */
class DocumentMasksTest {

    private static final long EOD = 2;

    /**
     * tokens [5, EOD, 7, 8, EOD, EOD, 9]: Megatron finds EODs at 1, 4, 5; positions[2:] -= 2,
     * positions[5:] -= 3, positions[6:] -= 1 give [0,1,0,1,2,0,0]; mask[2:, :2], mask[5:, :5] and
     * mask[6:, :6] are zeroed.
     */
    @Test
    void handWorkedExample() {
        long[] tokens = {5, EOD, 7, 8, EOD, EOD, 9};
        DocumentMasks all = DocumentMasks.of(tokens, EOD, true, true, true);
        assertThat(all.positions()).containsExactly(0, 1, 0, 1, 2, 0, 0);
        assertThat(all.lossMask()).containsExactly(1f, 0f, 1f, 1f, 0f, 0f, 1f);
        boolean[][] allowed = {
            {true, false, false, false, false, false, false},
            {true, true, false, false, false, false, false},
            {false, false, true, false, false, false, false},
            {false, false, true, true, false, false, false},
            {false, false, true, true, true, false, false},
            {false, false, false, false, false, true, false},
            {false, false, false, false, false, false, true},
        };
        boolean[][] masked = all.maskedOut();
        for (int i = 0; i < tokens.length; i++) {
            for (int j = 0; j < tokens.length; j++) {
                assertThat(masked[i][j]).as("mask[%d][%d]", i, j).isEqualTo(!allowed[i][j]);
            }
        }
    }

    @Test
    void flagsOffGiveTheDefaults() {
        long[] tokens = {5, EOD, 7, 8, EOD, EOD, 9};
        DocumentMasks none = DocumentMasks.of(tokens, EOD, false, false, false);
        assertThat(none.positions()).containsExactly(0, 1, 2, 3, 4, 5, 6);
        assertThat(none.lossMask()).containsExactly(1f, 1f, 1f, 1f, 1f, 1f, 1f);
        for (int i = 0; i < tokens.length; i++) {
            for (int j = 0; j < tokens.length; j++) {
                assertThat(none.attends(i, j)).isEqualTo(j <= i);
            }
        }
        // each flag alone changes only its own output
        DocumentMasks positionsOnly = DocumentMasks.of(tokens, EOD, true, false, false);
        assertThat(positionsOnly.positions()).containsExactly(0, 1, 0, 1, 2, 0, 0);
        assertThat(positionsOnly.attends(6, 0)).isTrue();
        DocumentMasks maskOnly = DocumentMasks.of(tokens, EOD, false, true, false);
        assertThat(maskOnly.positions()).containsExactly(0, 1, 2, 3, 4, 5, 6);
        assertThat(maskOnly.attends(6, 0)).isFalse();
    }

    /**
     * Windows of 257 tokens at many offsets of the concatenated corpus: the position of each token
     * is its distance from its document's start (or the window's start), the EOD closes a document,
     * and attention stays inside one document, all by the index's document lengths.
     */
    @Test
    void publicCorpusFollowsTheDocumentBoundariesOfTheIndex() {
        try (IndexedDataset data = IndexedDataset.open(DataFixtures.megatronCorpusPrefix())) {
            int docs = (int) Math.min(data.sequenceCount(), 400);
            int total = 0;
            for (int d = 0; d < docs; d++) {
                total += data.sequenceLength(d);
            }
            long[] stream = new long[total];
            int[] docOf = new int[total];
            int[] startOf = new int[total];
            int at = 0;
            for (int d = 0; d < docs; d++) {
                long[] doc = data.get(d);
                assertThat(doc[doc.length - 1]).as("document %d ends with EOD", d).isEqualTo(EOD);
                for (int j = 0; j < doc.length; j++) {
                    stream[at + j] = doc[j];
                    docOf[at + j] = d;
                    startOf[at + j] = at;
                }
                at += doc.length;
            }
            int seq = 256;
            int windows = 0;
            int crossings = 0;
            for (int w = 0; w + seq + 1 <= total; w += 997) {
                long[] tokens = java.util.Arrays.copyOfRange(stream, w, w + seq); // text[:-1]
                DocumentMasks m = DocumentMasks.of(tokens, EOD, true, true, true);
                for (int t = 0; t < seq; t++) {
                    int g = w + t;
                    assertThat(m.positions()[t]).as("window %d token %d", w, t).isEqualTo(g - Math.max(startOf[g], w));
                    boolean lastOfDoc = g + 1 == total || docOf[g + 1] != docOf[g];
                    assertThat(m.lossMask()[t]).isEqualTo(lastOfDoc ? 0f : 1f);
                    for (int j = 0; j <= t; j += 7) {
                        assertThat(m.attends(t, j)).isEqualTo(docOf[w + j] == docOf[g]);
                    }
                    if (docOf[g] != docOf[w]) {
                        crossings++;
                    }
                }
                windows++;
            }
            assertThat(windows).isGreaterThan(20);
            assertThat(crossings).as("windows spanning several documents").isGreaterThan(0);
        }
    }
}
