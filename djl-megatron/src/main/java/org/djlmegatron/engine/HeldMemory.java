package org.djlmegatron.engine;

import ai.djl.ndarray.BaseNDManager;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.TensorStorage;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import org.bytedeco.javacpp.Pointer;

/**
 * Bytes of tensor memory that a manager (and its sub-managers) keeps alive: the union of the
 * address ranges of its contiguous arrays, so views of one storage count once. After a forward
 * pass, the step's manager holds exactly what DJL keeps for backward (DJL frees nothing before
 * the manager closes), so this is the activation memory that recomputation saves.
 */
public final class HeldMemory {

    private HeldMemory() {}

    /** Bytes held by {@code manager}'s arrays. */
    public static long bytes(NDManager manager) {
        List<long[]> ranges = new ArrayList<>();
        for (NDArray a : ((BaseNDManager) manager).getManagedArrays()) {
            if (a.isReleased() || a.size() == 0) {
                continue;
            }
            long handle = ((PtNDArray) a).getHandle();
            if (!TensorStorage.isContiguous(handle)) {
                continue; // a view: its base is counted
            }
            long start = address(a, handle);
            ranges.add(new long[] {start, start + a.size() * a.getDataType().getNumOfBytes()});
        }
        ranges.sort(Comparator.comparingLong(r -> r[0]));
        long total = 0;
        long end = Long.MIN_VALUE;
        for (long[] r : ranges) {
            if (r[1] <= end) {
                continue;
            }
            total += r[1] - Math.max(r[0], end);
            end = r[1];
        }
        return total;
    }

    private static long address(NDArray a, long handle) {
        if (TorchNative.isAvailable()) {
            return TorchNative.dataPointer(a);
        }
        return new Pointer(TensorStorage.dataBuffer(handle)).address();
    }
}
