package org.djlmegatron.io.torch;

/**
 * A torch.save archive, a pickle or a PyTorch distributed checkpoint that cannot be read or
 * written. The message names the file (and where it applies the zip entry, the pickle opcode
 * offset or the checkpoint key) with what was expected and what was found.
 */
public class TorchFormatException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    public TorchFormatException(String message) {
        super(message);
    }

    public TorchFormatException(String message, Throwable cause) {
        super(message, cause);
    }
}
