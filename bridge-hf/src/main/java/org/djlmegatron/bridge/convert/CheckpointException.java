package org.djlmegatron.bridge.convert;

/**
 * A checkpoint that cannot be read, mapped or written. The message names the file or directory,
 * the key or field, and what was expected and found.
 */
public class CheckpointException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    public CheckpointException(String message) {
        super(message);
    }

    public CheckpointException(String message, Throwable cause) {
        super(message, cause);
    }
}
