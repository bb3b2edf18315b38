package org.djlmegatron.generation;

/** A generation request that cannot be served as given (the server answers 400 with the message). */
public class InvalidRequestException extends IllegalArgumentException {

    private static final long serialVersionUID = 1L;

    public InvalidRequestException(String message) {
        super(message);
    }
}
