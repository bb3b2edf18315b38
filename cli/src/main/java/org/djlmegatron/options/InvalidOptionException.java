package org.djlmegatron.options;

/**
 * A command-line option (or a config field standing for one) with a value the command cannot
 * use. The message is one line: the flag, what was expected, what was found.
 */
public final class InvalidOptionException extends IllegalArgumentException {

    private static final long serialVersionUID = 1L;

    private final String flag;

    public InvalidOptionException(String flag, String expected, Object found) {
        super(flag + ": expected " + expected + ", found " + found);
        this.flag = flag;
    }

    /** The flag named, e.g. {@code --micro-batch-size}. */
    public String flag() {
        return flag;
    }
}
