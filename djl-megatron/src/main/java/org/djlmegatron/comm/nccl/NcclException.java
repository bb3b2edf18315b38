package org.djlmegatron.comm.nccl;

/** NCCL or the CUDA runtime could not be loaded, or one of their calls failed; the message says which and why. */
public class NcclException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    public NcclException(String message) {
        super(message);
    }
}
