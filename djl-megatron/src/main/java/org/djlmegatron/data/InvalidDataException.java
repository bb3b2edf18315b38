package org.djlmegatron.data;

/**
 * A dataset file or an input line is not what it must be. The message is one line that names
 * the file (and the line, field or header entry), with the expected and the found value.
 *
 * <p>Unchecked, like {@code SafetensorsException}: data loading runs inside worker lambdas and a
 * corrupt file is not recoverable locally. I/O failures are wrapped with the cause kept.
 */
public class InvalidDataException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    public InvalidDataException(String message) {
        super(message);
    }

    public InvalidDataException(String message, Throwable cause) {
        super(message, cause);
    }
}
