package org.djlmegatron.comm;

/** A collective failed or timed out; the message names the group, the rank and the operation. */
public class CollectiveException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    public CollectiveException(String message) {
        super(message);
    }

    public CollectiveException(String message, Throwable cause) {
        super(message, cause);
    }
}
