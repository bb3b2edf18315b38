package org.djlmegatron.io.torch;

import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.djlmegatron.io.SafetensorsDType;

/**
 * The Python globals a pickle may name, and the data each becomes. Everything here is a
 * data-only reconstruction: a tensor view, a map, a {@link PyObject} record. No global is ever
 * imported or called, and a pickle naming any other global is refused with the global named.
 *
 * <p>The list covers what real checkpoints contain: {@code torch.save} tensors (rebuild functions,
 * typed storages, {@code OrderedDict} backward hooks, {@code torch.Size}), Megatron's
 * {@code args} ({@code argparse.Namespace} holding torch dtypes and Megatron enums), the RNG state
 * of legacy checkpoints (NumPy arrays, byte strings through {@code _codecs.encode}), Transformer
 * Engine extra state ({@code io.BytesIO}), and the dataclasses of a distributed checkpoint's
 * {@code .metadata}.
 */
public final class PickleAllowList {

    /** What a REDUCE of an allowed global produces from its arguments. */
    @FunctionalInterface
    private interface Reduce {
        Object apply(PyGlobal g, List<Object> args, String where);
    }

    private record Rule(Reduce reduce, boolean newObject) {}

    private static final String DCP = "torch.distributed.checkpoint.metadata.";

    /** The allow-list for every format this package reads. */
    public static final PickleAllowList TORCH = build();

    private final Map<String, Rule> rules;

    private PickleAllowList(Map<String, Rule> rules) {
        this.rules = rules;
    }

    private static PickleAllowList build() {
        Map<String, Rule> r = new LinkedHashMap<>();
        Reduce record = (g, a, w) -> new PyObject(g, a, PyObject.Creation.REDUCE, null);
        Rule value = new Rule(null, false);
        // tensors
        r.put("torch._utils._rebuild_tensor_v2", new Rule(PickleAllowList::rebuildTensor, false));
        r.put("torch._utils._rebuild_tensor", new Rule(PickleAllowList::rebuildTensor, false));
        r.put("torch._utils._rebuild_parameter", new Rule((g, a, w) -> arg(a, 0, TorchTensor.class, g, w), false));
        for (SafetensorsDType d : SafetensorsDType.values()) {
            r.put(TorchTypes.storageClass(d).qualifiedName(), value);
            r.put(TorchTypes.dtypeConstant(d).qualifiedName(), value);
        }
        r.put("torch.Size", new Rule(PickleAllowList::size, false));
        r.put("torch.serialization._get_layout", new Rule(record, false));
        r.put("collections.OrderedDict", new Rule(PickleAllowList::orderedDict, false));
        // Megatron args and RNG state
        r.put("argparse.Namespace", new Rule(null, true));
        r.put("megatron.core.enums.ModelType", new Rule(record, false));
        r.put("megatron.core.transformer.enums.AttnBackend", new Rule(record, false));
        r.put("numpy.core.multiarray._reconstruct", new Rule(record, false));
        r.put("numpy._core.multiarray._reconstruct", new Rule(record, false));
        r.put("numpy.ndarray", value);
        r.put("numpy.dtype", new Rule(record, false));
        r.put("io.BytesIO", new Rule(null, true));
        // basic builtins (protocol 2 spells bytes and sets as calls)
        r.put("_codecs.encode", new Rule(PickleAllowList::encode, false));
        r.put("builtins.set", new Rule((g, a, w) -> new LinkedHashSet<>(iterable(a, g, w)), false));
        r.put("builtins.frozenset", new Rule((g, a, w) -> Set.copyOf(iterable(a, g, w)), false));
        // torch.distributed.checkpoint .metadata
        for (String c : List.of("Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
                "TensorProperties", "MetadataIndex", "StorageMeta")) {
            r.put(DCP + c, new Rule(null, true));
        }
        r.put(DCP + "_MEM_FORMAT_ENCODING", new Rule(record, false));
        r.put("torch.distributed.checkpoint.filesystem._StorageInfo", new Rule(null, true));
        return new PickleAllowList(Map.copyOf(r));
    }

    /** Fails, naming the global, unless the pickle may refer to it. */
    PyGlobal check(PyGlobal g, String where) {
        if (!rules.containsKey(g.qualifiedName())) {
            throw new TorchFormatException(where + ": pickle refers to global '" + g.qualifiedName()
                    + "', which is not on the allow-list; refusing to read it (nothing was executed)");
        }
        return g;
    }

    /** The value of {@code callable(*args)} for a REDUCE. */
    Object reduce(Object callable, List<Object> args, String where) {
        PyGlobal g = callableGlobal(callable, "REDUCE", where);
        Rule rule = rules.get(g.qualifiedName());
        if (rule.reduce() == null) {
            throw new TorchFormatException(where + ": pickle calls '" + g + "', which the allow-list permits only "
                    + (rule.newObject() ? "to be created with NEWOBJ" : "as a value"));
        }
        return rule.reduce().apply(g, args, where);
    }

    /** The value of {@code cls.__new__(cls, *args)} for a NEWOBJ. */
    Object newObject(Object cls, List<Object> args, String where) {
        PyGlobal g = callableGlobal(cls, "NEWOBJ", where);
        if (!rules.get(g.qualifiedName()).newObject()) {
            throw new TorchFormatException(where + ": pickle instantiates '" + g + "' with NEWOBJ, which the allow-list"
                    + " does not permit");
        }
        return new PyObject(g, args, PyObject.Creation.NEWOBJ, null);
    }

    /** The allowed globals, sorted, for documentation and error messages. */
    public Set<String> names() {
        return new TreeSet<>(rules.keySet());
    }

    private static PyGlobal callableGlobal(Object callable, String op, String where) {
        if (!(callable instanceof PyGlobal g)) {
            throw new TorchFormatException(where + ": " + op + " on " + describe(callable)
                    + ", expected an allow-listed global");
        }
        return g;
    }

    private static Object rebuildTensor(PyGlobal g, List<Object> a, String where) {
        TorchStorage storage = arg(a, 0, TorchStorage.class, g, where);
        long offset = arg(a, 1, Long.class, g, where);
        long[] shape = longs(arg(a, 2, PyTuple.class, g, where), g, where);
        long[] stride = longs(arg(a, 3, PyTuple.class, g, where), g, where);
        if (shape.length != stride.length) {
            throw new TorchFormatException(where + ": " + g + ": size has " + shape.length + " dimensions, stride "
                    + stride.length);
        }
        return new TorchTensor(storage, offset, shape, stride);
    }

    private static Object size(PyGlobal g, List<Object> a, String where) {
        return TorchSize.of(longs(arg(a, 0, PyTuple.class, g, where), g, where));
    }

    private static Object orderedDict(PyGlobal g, List<Object> a, String where) {
        Map<Object, Object> m = new LinkedHashMap<>();
        if (!a.isEmpty()) {
            for (Object pair : iterable(a, g, where)) {
                if (!(pair instanceof PyTuple t) || t.size() != 2) {
                    throw new TorchFormatException(where + ": " + g + ": expected (key, value) pairs, found "
                            + describe(pair));
                }
                m.put(t.get(0), t.get(1));
            }
        }
        return m;
    }

    private static Object encode(PyGlobal g, List<Object> a, String where) {
        String text = arg(a, 0, String.class, g, where);
        String codec = a.size() > 1 ? arg(a, 1, String.class, g, where) : "utf-8";
        if (!codec.equals("latin1") && !codec.equals("latin-1")) {
            throw new TorchFormatException(where + ": " + g + " with codec '" + codec + "', expected latin1");
        }
        return text.getBytes(StandardCharsets.ISO_8859_1);
    }

    private static List<?> iterable(List<Object> a, PyGlobal g, String where) {
        Object it = a.isEmpty() ? List.of() : a.get(0);
        if (it instanceof PyTuple t) {
            return t.items();
        }
        if (it instanceof List<?> l) {
            return l;
        }
        throw new TorchFormatException(where + ": " + g + ": expected a list or tuple argument, found " + describe(it));
    }

    private static long[] longs(PyTuple t, PyGlobal g, String where) {
        long[] out = new long[t.size()];
        for (int i = 0; i < out.length; i++) {
            if (!(t.get(i) instanceof Long v) || v < 0) {
                throw new TorchFormatException(where + ": " + g + ": expected non-negative integers, found "
                        + describe(t.get(i)));
            }
            out[i] = v;
        }
        return out;
    }

    private static <T> T arg(List<Object> a, int i, Class<T> type, PyGlobal g, String where) {
        if (a.size() <= i || !type.isInstance(a.get(i))) {
            throw new TorchFormatException(where + ": " + g + ": argument " + i + " should be a "
                    + type.getSimpleName() + ", found " + (a.size() <= i ? "nothing" : describe(a.get(i))));
        }
        return type.cast(a.get(i));
    }

    static String describe(Object o) {
        return o == null ? "None" : o.getClass().getSimpleName() + " " + abbreviate(String.valueOf(o));
    }

    private static String abbreviate(String s) {
        return s.length() > 60 ? s.substring(0, 57) + "..." : s;
    }
}
