package org.djlmegatron.engine;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;

/** Base of the engine tests: a fresh manager per test, closed after it, and fp32 read-back. */
public abstract class ArrayTestBase {

    protected NDManager m;

    @BeforeEach
    protected void openManager() {
        m = NDManager.newBaseManager();
    }

    @AfterEach
    protected void closeManager() {
        m.close();
    }

    /** The values as fp32 (any dtype). */
    protected static float[] floats(NDArray a) {
        return a.toType(DataType.FLOAT32, false).toFloatArray();
    }
}
