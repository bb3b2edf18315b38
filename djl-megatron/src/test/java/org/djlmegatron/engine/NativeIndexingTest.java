package org.djlmegatron.engine;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.jni.JniUtils;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonParser;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The native library's NDIndex slicing: a {@code :} over a whole dimension dispatches nothing
 * (as Python's indexing), so autograd does not zero and fill a full-size gradient for it; the
 * values, writes and gradients of the other index forms are unchanged.
 */
@Tag("native")
class NativeIndexingTest extends GradModeTestBase {


    /** 0, 1, ..., 23 as [2, 3, 4]: element (i, j, k) is 12 i + 4 j + k. */
    private NDArray cube() {
        return m.arange(24f).reshape(2, 3, 4);
    }

    @Test
    void wholeDimensionSlicesDispatchNoSlice(@TempDir Path tmp) throws Exception {
        NDArray x = cube();
        Path trace = tmp.resolve("trace.json");
        JniUtils.startProfile(false, false, false);
        try {
            x.get(new NDIndex(":, :, 1:3")).close();
            x.get(new NDIndex("..., 1:3")).close();
            x.get(new NDIndex(":, 0:99, 2:")).close(); // a stop past the end covers the dimension too
        } finally {
            JniUtils.stopProfile(trace.toString());
        }
        // one slice for each partial dimension: 1 + 1 + 1 (0:99 and the whole ':' dispatch nothing)
        assertThat(count(trace, "aten::slice")).isEqualTo(3);
    }

    private static long count(Path trace, String op) throws Exception {
        JsonElement root = JsonParser.parseString(Files.readString(trace));
        JsonArray events = root.isJsonArray() ? root.getAsJsonArray() : root.getAsJsonObject().getAsJsonArray("traceEvents");
        long n = 0;
        for (JsonElement e : events) {
            if (e.getAsJsonObject().has("name") && op.equals(e.getAsJsonObject().get("name").getAsString())) {
                n++;
            }
        }
        return n;
    }

    @Test
    void slicedValuesFollowTheIndex() {
        NDArray x = cube();
        assertThat(x.get(new NDIndex(":, :, 1:3")).toFloatArray())
                .containsExactly(1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22);
        assertThat(x.get(new NDIndex("..., -1")).toFloatArray()).containsExactly(3, 7, 11, 15, 19, 23);
        assertThat(x.get(new NDIndex("1, :, ::2")).toFloatArray()).containsExactly(12, 14, 16, 18, 20, 22);
        assertThat(x.get(new NDIndex(":, 1:, :")).getShape()).isEqualTo(new Shape(2, 2, 4));
        assertThat(x.get(new NDIndex(":, :-1")).toFloatArray()).containsExactly(0, 1, 2, 3, 4, 5, 6, 7,
                12, 13, 14, 15, 16, 17, 18, 19);
        assertThat(x.get(new NDIndex("{}, :, 0", m.create(new long[] {1, 0}))).toFloatArray())
                .containsExactly(12, 16, 20, 0, 4, 8);
    }

    @Test
    void aWholeSliceIsStillAViewThatWritesThrough() {
        NDArray x = cube();
        NDArray all = x.get(new NDIndex(":, :, :"));
        all.set(new NDIndex("0, 0, 0"), -1f);
        assertThat(x.getFloat(0, 0, 0)).isEqualTo(-1f);
        x.set(new NDIndex(":, :, 3"), 100f);
        assertThat(x.get(new NDIndex("..., 3")).toFloatArray()).containsOnly(100f);
        assertThat(x.getFloat(1, 2, 2)).isEqualTo(22f);
    }

    @Test
    void gradientsReachOnlyTheSlicedElements() {
        NDArray x = cube();
        x.setRequiresGradient(true);
        NDArray y = x.get(new NDIndex(":, :, 1:3")).mul(m.arange(12f).reshape(2, 3, 2)).sum();
        JniUtils.backward((ai.djl.pytorch.engine.PtNDArray) y, (ai.djl.pytorch.engine.PtNDArray) y.onesLike(),
                false, false);
        float[] g = x.getGradient().toType(DataType.FLOAT32, false).toFloatArray();
        for (int i = 0; i < 2; i++) {
            for (int j = 0; j < 3; j++) {
                for (int k = 0; k < 4; k++) {
                    float expected = k == 1 || k == 2 ? 6 * i + 2 * j + (k - 1) : 0;
                    assertThat(g[12 * i + 4 * j + k]).as("gradient at (%d, %d, %d)", i, j, k).isEqualTo(expected);
                }
            }
        }
    }
}
