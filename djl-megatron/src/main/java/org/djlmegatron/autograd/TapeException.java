package org.djlmegatron.autograd;

/**
 * A misuse of the {@link Tape} or a failure inside its backward pass: a tensor that reached a
 * backward pass without crossing a cut, a gradient of the wrong shape from an adjoint, a backward
 * into a segment that libtorch refused. The message names the cut (where it was recorded) and the
 * segment; the libtorch error, if any, is the cause.
 */
public final class TapeException extends RuntimeException {

    public TapeException(String message) {
        super(message);
    }

    public TapeException(String message, Throwable cause) {
        super(message, cause);
    }
}
