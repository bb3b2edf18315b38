package org.djlmegatron.bridge.hf;

/** A Hugging Face checkpoint that cannot be mapped; the message names the file and the field. */
public class HfFormatException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    public HfFormatException(String message) {
        super(message);
    }

    public HfFormatException(String message, Throwable cause) {
        super(message, cause);
    }
}
