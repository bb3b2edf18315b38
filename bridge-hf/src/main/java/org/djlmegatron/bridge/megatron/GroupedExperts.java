package org.djlmegatron.bridge.megatron;

import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.convert.HostTensor;

/**
 * Megatron-Core's legacy grouped-GEMM expert weights ({@code --moe-grouped-gemm}, {@code GroupedMLP}):
 * per layer and tensor rank, {@code mlp.experts.weight1} of shape [hidden, E x F1] and {@code
 * mlp.experts.weight2} of shape [E x F2, hidden] for the rank's E local experts. Megatron's forward
 * reinterprets them as {@code weight1.view(E, hidden, -1)} and {@code weight2.view(E, -1, hidden)}:
 * local expert e's weights are the e-th contiguous block of each, [hidden, F1] and [F2, hidden], the
 * transposes of the per-expert {@code linear_fc1.weight} [F1, hidden] and {@code linear_fc2.weight}
 * [hidden, F2] ({@code SequentialMLP}'s names, which this project uses). A gated fc1 keeps each
 * tensor rank's [gate; up] order, as the per-expert shards do.
 *
 * @param expert the local expert
 * @param localExperts the rank's expert count E
 * @param fc1 weight1 (true) or weight2
 */
record GroupedExperts(int expert, int localExperts, boolean fc1) {

    private static final Pattern KEY = Pattern.compile("(.*\\.mlp\\.experts\\.)weight([12])");

    /** The per-expert grouped part {@code key} holds for local expert {@code expert}, or null for any other key. */
    static GroupedExperts of(String key, int expert, int localExperts) {
        Matcher m = KEY.matcher(key);
        return m.matches() ? new GroupedExperts(expert, localExperts, m.group(2).equals("1")) : null;
    }

    /** Whether {@code key} is a grouped-GEMM expert weight. */
    static boolean isGrouped(String key) {
        return KEY.matcher(key).matches();
    }

    /** The per-expert key ({@code ...mlp.experts.local_experts.e.linear_fc1.weight}) for grouped {@code key}. */
    String expertKey(String key) {
        Matcher m = KEY.matcher(key);
        if (!m.matches()) {
            throw new IllegalArgumentException(key);
        }
        return m.group(1) + "local_experts." + expert + (fc1 ? ".linear_fc1.weight" : ".linear_fc2.weight");
    }

    /** This expert's weight's shape, from the grouped tensor's {@code stored} shape. */
    long[] shape(long[] stored, String where) {
        long[] block = block(stored, where);
        return new long[] {block[1], block[0]};
    }

    /** This expert's weight (transposed block {@code expert}) out of the whole grouped tensor. */
    HostTensor extract(HostTensor grouped, String where) {
        long[] block = block(grouped.shape(), where);
        int size = grouped.dtype().elementSize();
        int rows = Math.toIntExact(block[0]);
        int cols = Math.toIntExact(block[1]);
        int base = expert * rows * cols;
        byte[] src = grouped.data();
        byte[] out = new byte[rows * cols * size];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) {
                System.arraycopy(src, (base + r * cols + c) * size, out, (c * rows + r) * size, size);
            }
        }
        return new HostTensor(grouped.dtype(), new long[] {cols, rows}, out);
    }

    /** The [rows, cols] block of one expert: weight1 [hidden, E F1] -> [hidden, F1]; weight2 [E F2, hidden] -> [F2, hidden]. */
    private long[] block(long[] stored, String where) {
        int grouped = fc1 ? 1 : 0;
        if (stored.length != 2 || stored[grouped] % localExperts != 0) {
            throw new CheckpointException(where + ": grouped-GEMM " + (fc1 ? "weight1" : "weight2") + " of shape "
                    + java.util.Arrays.toString(stored) + ", expected 2 dimensions with dimension " + grouped
                    + " a multiple of the " + localExperts + " local experts");
        }
        long[] block = stored.clone();
        block[grouped] /= localExperts;
        return block;
    }
}
