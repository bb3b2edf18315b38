package org.djlmegatron.io.torch;

import java.util.Arrays;
import java.util.List;
import org.djlmegatron.io.SafetensorsDType;

/**
 * A global tensor of a distributed checkpoint: its element type, full size and stored chunks.
 *
 * @param key the state-dict key ({@code fqn})
 * @param dtype element type
 * @param size global shape
 * @param chunks the stored pieces, which tile (a part of) the global tensor
 */
public record DcpTensor(String key, SafetensorsDType dtype, long[] size, List<DcpChunk> chunks) {

    public DcpTensor {
        size = size.clone();
        chunks = List.copyOf(chunks);
    }

    @Override
    public long[] size() {
        return size.clone();
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof DcpTensor t && key.equals(t.key) && dtype == t.dtype && Arrays.equals(size, t.size)
                && chunks.equals(t.chunks);
    }

    @Override
    public int hashCode() {
        return key.hashCode();
    }

    @Override
    public String toString() {
        return "DcpTensor[" + key + " " + dtype.code() + " " + Arrays.toString(size) + ", " + chunks.size()
                + " chunks]";
    }
}
