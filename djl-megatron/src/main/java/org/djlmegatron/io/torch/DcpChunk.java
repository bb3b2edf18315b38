package org.djlmegatron.io.torch;

import java.util.Arrays;

/**
 * One stored piece of a tensor in a distributed checkpoint: where it sits in the global tensor
 * and where its bytes are (a {@code torch.save} item inside a {@code .distcp} file).
 *
 * @param offsets its first index along each dimension of the global tensor
 * @param sizes its extent along each dimension
 * @param relativePath the {@code .distcp} file, relative to the checkpoint directory
 * @param fileOffset where the item starts in that file
 * @param length the item's length in bytes
 */
public record DcpChunk(long[] offsets, long[] sizes, String relativePath, long fileOffset, long length) {

    public DcpChunk {
        offsets = offsets.clone();
        sizes = sizes.clone();
    }

    @Override
    public long[] offsets() {
        return offsets.clone();
    }

    @Override
    public long[] sizes() {
        return sizes.clone();
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof DcpChunk c && Arrays.equals(offsets, c.offsets) && Arrays.equals(sizes, c.sizes)
                && relativePath.equals(c.relativePath) && fileOffset == c.fileOffset && length == c.length;
    }

    @Override
    public int hashCode() {
        return 31 * Arrays.hashCode(offsets) + relativePath.hashCode() + Long.hashCode(fileOffset);
    }

    @Override
    public String toString() {
        return "chunk " + Arrays.toString(offsets) + "+" + Arrays.toString(sizes) + " in " + relativePath + "@"
                + fileOffset;
    }
}
