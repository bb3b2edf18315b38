package org.djlmegatron.context;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.util.HashMap;
import java.util.Map;
import org.djlmegatron.data.DocumentMasks;

/**
 * One micro-batch's document structure ({@link DocumentMasking}): per row, the position id and
 * the document of every token of the whole sequence. Tensors are made in the ids' manager (they
 * live as long as the micro-batch, through its backward and any recomputation) and the masks are
 * cached per (query, key) index set, so every layer shares them.
 */
public final class DocumentLayout {

    private final DocumentMasking masking;
    private final DocumentMasks[] rows;
    private final NDManager manager;
    private final Map<String, NDArray> masks = new HashMap<>();

    private DocumentLayout(DocumentMasking masking, DocumentMasks[] rows, NDManager manager) {
        this.masking = masking;
        this.rows = rows;
        this.manager = manager;
    }

    static DocumentLayout of(DocumentMasking masking, NDArray ids) {
        int b = (int) ids.getShape().get(0);
        int seq = (int) ids.getShape().get(1);
        long[] all = ids.toLongArray();
        DocumentMasks[] rows = new DocumentMasks[b];
        for (int r = 0; r < b; r++) {
            long[] tokens = new long[seq];
            System.arraycopy(all, r * seq, tokens, 0, seq);
            rows[r] = DocumentMasks.of(tokens, masking.eod(), masking.resetPositionIds(), masking.resetAttentionMask(),
                    masking.eodMaskLoss());
        }
        return new DocumentLayout(masking, rows, ids.getManager());
    }

    /** Whether positions restart after each EOD ({@code --reset-position-ids}). */
    public boolean resetsPositions() {
        return masking.resetPositionIds();
    }

    /** Whether attention stays within a document ({@code --reset-attention-mask}). */
    public boolean masksDocuments() {
        return masking.resetAttentionMask();
    }

    /** Position ids {@code [b, n]} (int64) of the tokens at sequence indices {@code index}. */
    public NDArray positionIds(long[] index) {
        long[] out = new long[rows.length * index.length];
        int k = 0;
        for (DocumentMasks row : rows) {
            for (long i : index) {
                out[k++] = row.positions()[(int) i];
            }
        }
        return manager.create(out, new Shape(rows.length, index.length));
    }

    /**
     * The additive mask {@code [b, 1, 1, sq, sk]} (fp32) of queries at sequence indices
     * {@code qIndex} over keys at {@code kIndex}: 0 where the key is not after the query and in its
     * document, -1e30 elsewhere. {@code key} names the index pair for the cache.
     */
    public NDArray additiveMask(String key, long[] qIndex, long[] kIndex) {
        String k = key + ":" + qIndex.length + ":" + kIndex.length;
        NDArray cached = masks.get(k);
        if (cached != null) {
            return cached;
        }
        int sq = qIndex.length;
        int sk = kIndex.length;
        float[] m = new float[Math.multiplyExact(rows.length, Math.multiplyExact(sq, sk))];
        int at = 0;
        for (DocumentMasks row : rows) {
            for (long q : qIndex) {
                for (long c : kIndex) {
                    m[at++] = row.attends((int) q, (int) c) ? 0f : -1e30f;
                }
            }
        }
        NDArray mask = manager.create(m, new Shape(rows.length, 1, 1, sq, sk));
        masks.put(k, mask);
        return mask;
    }

    /** The indices {@code 0 .. n-1} (a whole sequence without context parallelism). */
    public static long[] range(long n) {
        long[] out = new long[(int) n];
        for (int i = 0; i < n; i++) {
            out[i] = i;
        }
        return out;
    }
}
