package org.djlmegatron.io;

/**
 * A safetensors file, a sharded index or a write failed. The message names the file and, where
 * there is one, the tensor and the header field, with the expected and the found value.
 *
 * <p>Unchecked on purpose: a corrupt checkpoint is not something a training loop can recover
 * from locally, and model-loading code runs inside lambdas. Underlying I/O errors are wrapped
 * with the {@link java.io.IOException} as the cause.
 */
public class SafetensorsException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    public SafetensorsException(String message) {
        super(message);
    }

    public SafetensorsException(String message, Throwable cause) {
        super(message, cause);
    }
}
