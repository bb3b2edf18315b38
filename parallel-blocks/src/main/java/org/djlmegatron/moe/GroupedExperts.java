package org.djlmegatron.moe;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.util.List;
import java.util.function.UnaryOperator;
import org.djlmegatron.transformer.Mlp;

/**
 * {@code --moe-grouped-gemm}: the L local experts' MLPs as two batched GEMMs. The engine has no
 * ragged grouped GEMM, so each expert's rows are zero-padded to the busiest expert's count into
 * {@code [L, max, h]} and multiplied by the experts' stacked weights ({@code bmm}); the padded
 * rows' outputs are dropped. Worth it when the counts are even (little padding) and the experts
 * small (many tiny GEMMs cost more in dispatch than in arithmetic); {@code bench-moe} measures it.
 */
final class GroupedExperts {

    private GroupedExperts() {}

    /** Rows in ({@code counts[l]} consecutive rows for local expert l), rows out, as the per-expert loop. */
    static NDArray run(List<Mlp> experts, NDArray rows, long[] counts, UnaryOperator<NDArray> activate) {
        int local = experts.size();
        long max = 0;
        long total = 0;
        for (long c : counts) {
            max = Math.max(max, c);
            total += c;
        }
        if (max == 0) {
            return rows; // [0, h]
        }
        long h = rows.getShape().get(1);
        NDManager m = rows.getManager();
        long[] padded = new long[(int) (local * max)]; // row of each padded slot; total: the zero row
        long[] back = new long[(int) total]; // padded slot of each row
        java.util.Arrays.fill(padded, total);
        long at = 0;
        for (int l = 0; l < local; l++) {
            for (long i = 0; i < counts[l]; i++) {
                padded[(int) (l * max + i)] = at;
                back[(int) at] = l * max + i;
                at++;
            }
        }
        NDArray source = NDArrays.concat(new NDList(rows, m.zeros(new Shape(1, h), rows.getDataType())));
        NDArray x = source.get(m.create(padded)).reshape(local, max, h);
        NDList fc1 = new NDList(local);
        NDList fc2 = new NDList(local);
        for (Mlp e : experts) {
            fc1.add(e.linearFc1().weightFor(rows)); // [2 ffn, h]
            fc2.add(e.linearFc2().weightFor(rows)); // [h, ffn]
        }
        NDArray up = x.matMul(NDArrays.stack(fc1).transpose(0, 2, 1)); // [L, max, 2 ffn]
        NDArray down = activate.apply(up).matMul(NDArrays.stack(fc2).transpose(0, 2, 1)); // [L, max, h]
        return down.reshape(local * max, h).get(m.create(back));
    }
}
