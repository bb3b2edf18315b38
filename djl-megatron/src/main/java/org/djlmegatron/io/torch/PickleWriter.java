package org.djlmegatron.io.torch;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Writes data as a protocol-2 pickle, the protocol {@code torch.save} uses, so that Python's
 * {@code pickle.load} and {@code torch.load} read it. Values are those {@link PickleReader}
 * produces: null, booleans, integers, doubles, strings, {@link PyTuple}, lists, maps, {@link
 * PyGlobal}, {@link PyObject}, {@link TorchSize} and {@link TorchTensor} (written as PyTorch
 * does: a {@code _rebuild_tensor_v2} call on a persistent-id storage).
 */
public final class PickleWriter {

    private static final int BATCH = 1000; // pickle's own batch size for APPENDS / SETITEMS

    private final ByteArrayOutputStream out = new ByteArrayOutputStream();

    private PickleWriter() {}

    /** The pickle of {@code root}. */
    public static byte[] write(Object root) {
        PickleWriter w = new PickleWriter();
        w.out.write(0x80);
        w.out.write(2);
        w.value(root);
        w.out.write('.');
        return w.out.toByteArray();
    }

    private void value(Object v) {
        if (v == null) {
            out.write('N');
        } else if (v instanceof Boolean b) {
            out.write(b ? 0x88 : 0x89);
        } else if (v instanceof Integer i) {
            integer(i);
        } else if (v instanceof Long l) {
            integer(l);
        } else if (v instanceof Double || v instanceof Float) {
            out.write('G');
            out.writeBytes(ByteBuffer.allocate(8).order(ByteOrder.BIG_ENDIAN)
                    .putDouble(((Number) v).doubleValue()).array());
        } else if (v instanceof String s) {
            string(s);
        } else if (v instanceof PyTuple t) {
            tuple(t.items());
        } else if (v instanceof List<?> l) {
            out.write(']');
            for (int i = 0; i < l.size(); i += BATCH) {
                out.write('(');
                l.subList(i, Math.min(l.size(), i + BATCH)).forEach(this::value);
                out.write('e');
            }
        } else if (v instanceof Map<?, ?> m) {
            out.write('}');
            List<Map.Entry<?, ?>> entries = new ArrayList<>(m.entrySet());
            for (int i = 0; i < entries.size(); i += BATCH) {
                out.write('(');
                for (Map.Entry<?, ?> e : entries.subList(i, Math.min(entries.size(), i + BATCH))) {
                    value(e.getKey());
                    value(e.getValue());
                }
                out.write('u');
            }
        } else if (v instanceof PyGlobal g) {
            global(g);
        } else if (v instanceof PyObject o) {
            global(o.type());
            tuple(o.args());
            out.write(o.creation() == PyObject.Creation.NEWOBJ ? 0x81 : 'R');
            if (o.state() != null) {
                value(o.state());
                out.write('b');
            }
        } else if (v instanceof TorchSize s) {
            global(new PyGlobal("torch", "Size"));
            tuple(List.of(new PyTuple(new ArrayList<>(s.dims()))));
            out.write('R');
        } else if (v instanceof TorchTensor t) {
            tensor(t);
        } else {
            throw new IllegalArgumentException("cannot pickle " + v.getClass().getName());
        }
    }

    /** {@code _rebuild_tensor_v2((storage pid), offset, size, stride, False, OrderedDict())}. */
    private void tensor(TorchTensor t) {
        global(new PyGlobal("torch._utils", "_rebuild_tensor_v2"));
        out.write('(');
        TorchStorage s = t.storage();
        tuple(List.of("storage", TorchTypes.storageClass(s.dtype()), s.key(), "cpu", s.numel()));
        out.write('Q');
        integer(t.offset());
        tuple(boxed(t.shape()));
        tuple(boxed(t.stride()));
        out.write(0x89);
        global(new PyGlobal("collections", "OrderedDict"));
        out.write(')');
        out.write('R');
        out.write('t');
        out.write('R');
    }

    private static List<Object> boxed(long[] values) {
        List<Object> out = new ArrayList<>(values.length);
        for (long v : values) {
            out.add(v);
        }
        return out;
    }

    private void tuple(List<?> items) {
        switch (items.size()) {
            case 0 -> out.write(')');
            case 1, 2, 3 -> {
                items.forEach(this::value);
                out.write(0x84 + items.size()); // TUPLE1..TUPLE3
            }
            default -> {
                out.write('(');
                items.forEach(this::value);
                out.write('t');
            }
        }
    }

    private void global(PyGlobal g) {
        out.write('c');
        out.writeBytes((g.module() + "\n" + g.name() + "\n").getBytes(StandardCharsets.UTF_8));
    }

    private void string(String s) {
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        out.write('X');
        out.writeBytes(ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt(b.length).array());
        out.writeBytes(b);
    }

    private void integer(long v) {
        if (v >= 0 && v < 256) {
            out.write('K');
            out.write((int) v);
        } else if (v >= 0 && v < 65536) {
            out.write('M');
            out.write((int) (v & 0xFF));
            out.write((int) (v >>> 8));
        } else if (v >= Integer.MIN_VALUE && v <= Integer.MAX_VALUE) {
            out.write('J');
            out.writeBytes(ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt((int) v).array());
        } else {
            out.write(0x8a); // LONG1: 8 little-endian two's-complement bytes
            out.write(8);
            out.writeBytes(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(v).array());
        }
    }
}
