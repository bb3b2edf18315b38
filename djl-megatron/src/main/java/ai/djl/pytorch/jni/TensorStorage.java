package ai.djl.pytorch.jni;

import java.nio.ByteBuffer;

/**
 * The two package-private natives of DJL's {@code PyTorchLibrary} that collectives on device memory
 * need, reachable only from this package. Part of djl-megatron, not of DJL.
 */
public final class TensorStorage {

    private TensorStorage() {}

    /**
     * {@code tensor.data_ptr()} wrapped in a direct buffer, without moving the tensor: for a CUDA
     * tensor the buffer's address is a device pointer and its contents must never be read from Java.
     */
    public static ByteBuffer dataBuffer(long handle) {
        return PyTorchLibrary.LIB.torchDirectByteBuffer(handle);
    }

    /** {@code tensor.is_contiguous()}. */
    public static boolean isContiguous(long handle) {
        return PyTorchLibrary.LIB.torchIsContiguous(handle);
    }
}
