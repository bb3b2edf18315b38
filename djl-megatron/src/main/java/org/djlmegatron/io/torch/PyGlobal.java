package org.djlmegatron.io.torch;

/**
 * A reference to a Python global (a class, function or constant such as {@code torch.float32})
 * as a pickle names it. Reading never resolves it to code: what a global may become is decided by
 * {@link PickleAllowList}.
 *
 * @param module e.g. {@code torch}
 * @param name e.g. {@code float32}
 */
public record PyGlobal(String module, String name) {

    /** {@code module.name}. */
    public String qualifiedName() {
        return module + "." + name;
    }

    /** Parses {@code module.name} (the last dot separates them). */
    public static PyGlobal parse(String qualified) {
        int dot = qualified.lastIndexOf('.');
        return new PyGlobal(qualified.substring(0, dot), qualified.substring(dot + 1));
    }

    @Override
    public String toString() {
        return qualifiedName();
    }
}
