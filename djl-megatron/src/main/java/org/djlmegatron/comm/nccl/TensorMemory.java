package org.djlmegatron.comm.nccl;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.TensorStorage;
import org.bytedeco.javacpp.Pointer;
import org.djlmegatron.engine.TorchNative;

/** Where a tensor's elements live and which CUDA stream libtorch queues work on: what NCCL calls take. */
final class TensorMemory {

    private TensorMemory() {}

    /**
     * Address of the first element of {@code x}, which must be contiguous: a device pointer for a
     * CUDA tensor, a host address for a CPU tensor. 0 for an empty tensor.
     */
    static long address(NDArray x) {
        long handle = ((PtNDArray) x).getHandle();
        if (!TensorStorage.isContiguous(handle)) {
            throw new IllegalStateException("a NCCL buffer must be contiguous: " + x.getDataType() + " " + x.getShape());
        }
        if (x.size() == 0) {
            return 0;
        }
        if (TorchNative.isAvailable()) {
            return TorchNative.dataPointer(x);
        }
        return new Pointer(TensorStorage.dataBuffer(handle)).address();
    }

    /**
     * The stream libtorch queues {@code device}'s work on, so that NCCL runs in order with it
     * without a host synchronisation. Without the project's native library nobody sets another
     * stream, so libtorch uses the legacy default stream, whose handle is 0; 0 also for the CPU.
     */
    static long currentStream(Device device) {
        if (device.isGpu() && TorchNative.isAvailable()) {
            return TorchNative.currentCudaStream(device.getDeviceId());
        }
        return 0;
    }
}
