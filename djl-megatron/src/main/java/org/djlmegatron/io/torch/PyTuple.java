package org.djlmegatron.io.torch;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;

/**
 * A Python tuple read from or written to a pickle (lists are {@link java.util.List}s, dicts
 * {@link java.util.Map}s, so a separate type keeps the two sequence kinds apart).
 *
 * @param items the elements, immutable
 */
public record PyTuple(List<Object> items) {

    public PyTuple {
        items = Collections.unmodifiableList(new ArrayList<>(items)); // may hold None
    }

    public static PyTuple of(Object... items) {
        return new PyTuple(Arrays.asList(items));
    }

    public Object get(int i) {
        return items.get(i);
    }

    public int size() {
        return items.size();
    }
}
