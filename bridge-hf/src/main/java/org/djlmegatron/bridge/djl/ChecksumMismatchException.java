package org.djlmegatron.bridge.djl;

import org.djlmegatron.bridge.convert.CheckpointException;

/** A checkpoint file whose bytes no longer match the checksum recorded when it was written. */
public final class ChecksumMismatchException extends CheckpointException {

    private static final long serialVersionUID = 1L;

    public ChecksumMismatchException(String message) {
        super(message);
    }
}
