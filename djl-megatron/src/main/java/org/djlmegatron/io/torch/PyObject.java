package org.djlmegatron.io.torch;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * An instance of an allow-listed Python class, held as data: which class, the arguments it was
 * created with and the state a pickle's {@code BUILD} gave it. Nothing is executed to make one.
 *
 * <p>Writing renders it back as Python pickles it: {@code NEWOBJ} (the class called through
 * {@code cls.__new__}, as dataclasses and {@code argparse.Namespace} are) or {@code REDUCE} (the
 * class or function called with the arguments, as enums and {@code torch.Size} are), followed by
 * {@code BUILD} when there is state.
 */
public final class PyObject {

    /** How the object is created when unpickled. */
    public enum Creation {
        NEWOBJ,
        REDUCE
    }

    private final PyGlobal type;
    private final List<Object> args;
    private final Creation creation;
    private Object state;

    public PyObject(PyGlobal type, List<Object> args, Creation creation, Object state) {
        this.type = Objects.requireNonNull(type, "type");
        this.args = Collections.unmodifiableList(new ArrayList<>(args)); // may hold None
        this.creation = creation;
        this.state = state;
    }

    /** A dataclass-like object: created empty, its fields set from a dict state. */
    public static PyObject withFields(String qualifiedType, Map<String, Object> fields) {
        return new PyObject(PyGlobal.parse(qualifiedType), List.of(), Creation.NEWOBJ, fields);
    }

    /** A value created by calling {@code qualifiedType(args...)} (enums, layouts). */
    public static PyObject called(String qualifiedType, Object... args) {
        return new PyObject(PyGlobal.parse(qualifiedType), List.of(args), Creation.REDUCE, null);
    }

    public PyGlobal type() {
        return type;
    }

    public List<Object> args() {
        return args;
    }

    public Creation creation() {
        return creation;
    }

    public Object state() {
        return state;
    }

    /** The state as a dict of fields (dataclasses, Namespace), or an empty map. */
    @SuppressWarnings("unchecked")
    public Map<Object, Object> fields() {
        return state instanceof Map<?, ?> m ? (Map<Object, Object>) m : Map.of();
    }

    /** Sets the state once, as a pickle's BUILD does. */
    void build(Object newState, String where) {
        if (state != null) {
            throw new TorchFormatException(where + ": BUILD on " + type + " that already has state");
        }
        state = newState;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof PyObject p && type.equals(p.type) && args.equals(p.args)
                && creation == p.creation && Objects.equals(state, p.state);
    }

    @Override
    public int hashCode() {
        return Objects.hash(type, args, state);
    }

    @Override
    public String toString() {
        return type + args.toString() + (state == null ? "" : state.toString());
    }
}
