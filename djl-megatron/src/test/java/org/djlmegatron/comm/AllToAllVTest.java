package org.djlmegatron.comm;

import org.djlmegatron.launch.LocalWorld;
import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Function;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;
import org.junit.jupiter.api.Test;

/**
 * The variable-split all-to-all (the MoE token dispatcher's exchange) on the thread and TCP
 * backends: uneven and empty splits arrive in group-rank order, rows intact.
 */
class AllToAllVTest {

    private static final Duration TIMEOUT = Duration.ofSeconds(20);
    /** COUNTS[r][j]: rows rank r sends to rank j (zeros included, and one rank that receives nothing from itself). */
    private static final long[][] COUNTS = {{2, 0, 3}, {1, 1, 0}, {0, 4, 0}};

    /** Row i sent from r to j holds (100 r + 10 j + i, -(100 r + 10 j + i)). */
    private static float code(int r, int j, int i) {
        return 100f * r + 10f * j + i;
    }

    private static final Function<RankContext, float[]> EXCHANGE = ctx -> {
        ProcessGroup g = ctx.group(GroupKind.TENSOR);
        int r = g.rank();
        List<Float> rows = new ArrayList<>();
        long max = 0;
        long[] recv = new long[3];
        for (int j = 0; j < 3; j++) {
            for (int i = 0; i < COUNTS[r][j]; i++) {
                rows.add(code(r, j, i));
                rows.add(-code(r, j, i));
            }
            recv[j] = COUNTS[j][r];
            for (long[] c : COUNTS) {
                max = Math.max(max, c[j]);
            }
        }
        float[] flat = new float[rows.size()];
        for (int i = 0; i < flat.length; i++) {
            flat[i] = rows.get(i);
        }
        try (NDManager m = ctx.manager().newSubManager()) {
            NDArray x = m.create(flat, new Shape(flat.length / 2, 2));
            return g.allToAllV(x, COUNTS[r], recv, max).toFloatArray();
        }
    };

    private static float[] expected(int j) {
        List<Float> rows = new ArrayList<>();
        for (int r = 0; r < 3; r++) {
            for (int i = 0; i < COUNTS[r][j]; i++) {
                rows.add(code(r, j, i));
                rows.add(-code(r, j, i));
            }
        }
        float[] out = new float[rows.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = rows.get(i);
        }
        return out;
    }

    @Test
    void unevenSplitsArriveInGroupOrderOnThreadsAndOverTcp() {
        RankGrid grid = RankGrid.create(3, 3, 1, 1, 1);
        List<float[]> threads = LocalWorld.run(grid, TIMEOUT, EXCHANGE);
        List<float[]> tcp = Nodes.allResults(Nodes.run(grid, 3, TIMEOUT, EXCHANGE));
        for (int j = 0; j < 3; j++) {
            assertThat(threads.get(j)).as("rank %d, threads", j).containsExactly(expected(j));
            assertThat(tcp.get(j)).as("rank %d, tcp", j).containsExactly(expected(j));
        }
    }
}
