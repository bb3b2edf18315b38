package org.djlmegatron.bridge.export;

import java.util.Arrays;

/**
 * The byte-level reorderings between Hugging Face and Megatron-Core layouts: Megatron's grouped
 * q/k/v rows and 2-D transposes (GPT-2's {@code Conv1D} stores {@code [in, out]}). All are
 * permutations, so converting back and forth is bit-exact.
 */
final class RowShuffle {

    private RowShuffle() {}

    /**
     * Megatron's fused q/k/v: for each key/value group, its {@code qRows} query rows, then its
     * {@code kvRows} key rows, then its value rows.
     */
    static byte[] group(byte[] q, byte[] k, byte[] v, int groups, int qRows, int kvRows, int rowBytes) {
        byte[] out = new byte[q.length + k.length + v.length];
        int qBlock = qRows * rowBytes;
        int kvBlock = kvRows * rowBytes;
        int at = 0;
        for (int g = 0; g < groups; g++) {
            System.arraycopy(q, g * qBlock, out, at, qBlock);
            at += qBlock;
            System.arraycopy(k, g * kvBlock, out, at, kvBlock);
            at += kvBlock;
            System.arraycopy(v, g * kvBlock, out, at, kvBlock);
            at += kvBlock;
        }
        return out;
    }

    /** The inverse of {@link #group}: {q, k, v}. */
    static byte[][] ungroup(byte[] fused, int groups, int qRows, int kvRows, int rowBytes) {
        int qBlock = qRows * rowBytes;
        int kvBlock = kvRows * rowBytes;
        byte[] q = new byte[groups * qBlock];
        byte[] k = new byte[groups * kvBlock];
        byte[] v = new byte[groups * kvBlock];
        int at = 0;
        for (int g = 0; g < groups; g++) {
            System.arraycopy(fused, at, q, g * qBlock, qBlock);
            at += qBlock;
            System.arraycopy(fused, at, k, g * kvBlock, kvBlock);
            at += kvBlock;
            System.arraycopy(fused, at, v, g * kvBlock, kvBlock);
            at += kvBlock;
        }
        return new byte[][] {q, k, v};
    }

    /** The transpose of a row-major {@code [rows, cols]} matrix of {@code elementSize}-byte elements. */
    static byte[] transpose(byte[] data, int rows, int cols, int elementSize) {
        byte[] out = new byte[data.length];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) {
                System.arraycopy(data, (r * cols + c) * elementSize, out, (c * rows + r) * elementSize, elementSize);
            }
        }
        return out;
    }

    /** Concatenates byte arrays. */
    static byte[] concat(byte[]... parts) {
        int n = 0;
        for (byte[] p : parts) {
            n += p.length;
        }
        byte[] out = new byte[n];
        int at = 0;
        for (byte[] p : parts) {
            System.arraycopy(p, 0, out, at, p.length);
            at += p.length;
        }
        return out;
    }

    /** Splits a byte array into {@code n} equal parts. */
    static byte[][] split(byte[] data, int n) {
        byte[][] out = new byte[n][];
        int part = data.length / n;
        for (int i = 0; i < n; i++) {
            out[i] = Arrays.copyOfRange(data, i * part, (i + 1) * part);
        }
        return out;
    }
}
