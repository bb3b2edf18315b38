package org.djlmegatron.io.torch;

import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.BiFunction;

/**
 * A pickle virtual machine that only builds data. It understands the binary opcodes of pickle
 * protocols 2 to 5 (what {@code torch.save} and {@code pickle.dump} emit); globals are checked
 * against a {@link PickleAllowList} and turned into records, never imported or called. Text
 * opcodes of protocols 0/1, {@code INST}/{@code OBJ}, the extension registry and out-of-band
 * buffers are refused.
 *
 * <p>Values: {@code None} is null, booleans {@link Boolean}, ints {@link Long} (or {@link
 * BigInteger} beyond 64 bits), floats {@link Double}, str {@link String}, bytes {@code byte[]},
 * tuples {@link PyTuple}, lists {@link List}, dicts {@link Map} (insertion-ordered), sets {@link
 * Set}.
 */
public final class PickleReader {

    private static final Object MARK = new Object();

    private final byte[] data;
    private final String where;
    private final PickleAllowList allowList;
    private final BiFunction<Object, String, Object> persistentLoad;
    private final ByteBuffer buf;
    private final List<Object> stack = new ArrayList<>();
    private final List<Integer> marks = new ArrayList<>();
    private final Map<Long, Object> memo = new HashMap<>();
    private int opStart;

    private PickleReader(byte[] data, String where, PickleAllowList allowList,
            BiFunction<Object, String, Object> persistentLoad) {
        this.data = data;
        this.where = where;
        this.allowList = allowList;
        this.persistentLoad = persistentLoad;
        this.buf = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN);
    }

    /**
     * Unpickles {@code data}.
     *
     * @param where names the source in errors (file and entry)
     * @param persistentLoad maps a persistent id (and {@code where}) to its object; null refuses
     *     persistent ids
     */
    public static Object load(byte[] data, String where, PickleAllowList allowList,
            BiFunction<Object, String, Object> persistentLoad) {
        return new PickleReader(data, where, allowList, persistentLoad).run();
    }

    private Object run() {
        while (true) {
            if (!buf.hasRemaining()) {
                throw error("pickle ends without STOP (truncated?)");
            }
            opStart = buf.position();
            int op = buf.get() & 0xFF;
            switch (op) {
                case 0x80 -> { // PROTO
                    int proto = u8();
                    if (proto > 5) {
                        throw error("pickle protocol " + proto + " is newer than 5");
                    }
                }
                case 0x95 -> need(8).getLong(); // FRAME: a length hint; the data follows inline
                case '.' -> { // STOP
                    Object result = pop();
                    if (!stack.isEmpty() || !marks.isEmpty()) {
                        throw error("STOP with " + stack.size() + " values still on the stack");
                    }
                    return result;
                }
                case '(' -> marks.add(stack.size());
                case '0' -> pop();
                case '1' -> popMark();
                case '2' -> push(peek());
                case 'N' -> push(null);
                case 0x88 -> push(Boolean.TRUE);
                case 0x89 -> push(Boolean.FALSE);
                case 'J' -> push((long) need(4).getInt());
                case 'K' -> push((long) u8());
                case 'M' -> push((long) (need(2).getShort() & 0xFFFF));
                case 0x8a -> push(longBytes(u8()));
                case 0x8b -> push(longBytes(length(need(4).getInt() & 0xFFFFFFFFL)));
                case 'G' -> push(ByteBuffer.wrap(bytes(8)).order(ByteOrder.BIG_ENDIAN).getDouble());
                case 'X' -> push(utf8(bytes(length(need(4).getInt() & 0xFFFFFFFFL))));
                case 0x8c -> push(utf8(bytes(u8())));
                case 0x8d -> push(utf8(bytes(length(need(8).getLong()))));
                case 'T' -> push(latin1(bytes(length(need(4).getInt() & 0xFFFFFFFFL))));
                case 'U' -> push(latin1(bytes(u8())));
                case 'B' -> push(bytes(length(need(4).getInt() & 0xFFFFFFFFL)));
                case 'C' -> push(bytes(u8()));
                case 0x8e, 0x96 -> push(bytes(length(need(8).getLong())));
                case ')' -> push(new PyTuple(List.of()));
                case 0x85 -> push(tuple(1));
                case 0x86 -> push(tuple(2));
                case 0x87 -> push(tuple(3));
                case 't' -> push(new PyTuple(popMark()));
                case ']' -> push(new ArrayList<>());
                case 'l' -> push(new ArrayList<>(popMark()));
                case 'a' -> {
                    Object v = pop();
                    list(peek(), "APPEND").add(v);
                }
                case 'e' -> {
                    List<Object> items = popMark();
                    list(peek(), "APPENDS").addAll(items);
                }
                case '}' -> push(new LinkedHashMap<>());
                case 'd' -> {
                    Map<Object, Object> m = new LinkedHashMap<>();
                    putPairs(m, popMark());
                    push(m);
                }
                case 's' -> {
                    Object v = pop();
                    Object k = pop();
                    dict(peek(), "SETITEM").put(k, v);
                }
                case 'u' -> {
                    List<Object> items = popMark();
                    putPairs(dict(peek(), "SETITEMS"), items);
                }
                case 0x8f -> push(new LinkedHashSet<>());
                case 0x90 -> {
                    List<Object> items = popMark();
                    set(peek(), "ADDITEMS").addAll(items);
                }
                case 0x91 -> push(Set.copyOf(popMark()));
                case 'h' -> push(memoGet(u8()));
                case 'j' -> push(memoGet(need(4).getInt() & 0xFFFFFFFFL));
                case 'q' -> memo.put((long) u8(), peek());
                case 'r' -> memo.put(need(4).getInt() & 0xFFFFFFFFL, peek());
                case 0x94 -> memo.put((long) memo.size(), peek());
                case 'c' -> push(allowList.check(new PyGlobal(line(), line()), at()));
                case 0x93 -> {
                    Object name = pop();
                    Object module = pop();
                    if (!(module instanceof String m) || !(name instanceof String n)) {
                        throw error("STACK_GLOBAL expects two strings");
                    }
                    push(allowList.check(new PyGlobal(m, n), at()));
                }
                case 'R' -> {
                    Object args = pop();
                    Object callable = pop();
                    push(allowList.reduce(callable, tupleItems(args, "REDUCE"), at()));
                }
                case 0x81 -> {
                    Object args = pop();
                    Object cls = pop();
                    push(allowList.newObject(cls, tupleItems(args, "NEWOBJ"), at()));
                }
                case 0x92 -> {
                    Object kwargs = pop();
                    Object args = pop();
                    Object cls = pop();
                    if (!(kwargs instanceof Map<?, ?> k) || !k.isEmpty()) {
                        throw error("NEWOBJ_EX with keyword arguments is not supported");
                    }
                    push(allowList.newObject(cls, tupleItems(args, "NEWOBJ_EX"), at()));
                }
                case 'b' -> build(pop(), peek());
                case 'Q' -> push(persistent(pop()));
                default -> throw error(refusal(op));
            }
        }
    }

    private void build(Object state, Object target) {
        if (target instanceof PyObject p) {
            p.build(state, at());
        } else if (target instanceof Map<?, ?> && (state == null || state instanceof Map<?, ?> s && s.isEmpty())) {
            return; // an OrderedDict without instance attributes
        } else {
            throw error("BUILD on " + PickleAllowList.describe(target) + ", which takes no state");
        }
    }

    private Object persistent(Object pid) {
        if (persistentLoad == null) {
            throw error("persistent id " + PickleAllowList.describe(pid) + " where none is expected");
        }
        return persistentLoad.apply(pid, at());
    }

    private static String refusal(int op) {
        return switch (op) {
            case 'i', 'o' -> "opcode " + name(op) + " (INST/OBJ) instantiates classes by calling them; refused";
            case 0x82, 0x83, 0x84 -> "extension-registry opcode " + name(op) + " is not supported";
            case 0x97, 0x98 -> "out-of-band buffer opcode " + name(op) + " is not supported";
            case 'I', 'L', 'F', 'S', 'V', 'g', 'p', 'P' ->
                    "text opcode " + name(op) + " of pickle protocol 0 is not supported (expected protocol 2 or later)";
            default -> "unknown opcode " + name(op);
        };
    }

    private static String name(int op) {
        return op >= 0x20 && op < 0x7f ? "'" + (char) op + "'" : String.format("0x%02x", op);
    }

    private void putPairs(Map<Object, Object> m, List<Object> items) {
        if (items.size() % 2 != 0) {
            throw error("odd number of items for a dict");
        }
        for (int i = 0; i < items.size(); i += 2) {
            m.put(items.get(i), items.get(i + 1));
        }
    }

    @SuppressWarnings("unchecked")
    private List<Object> list(Object o, String op) {
        if (o instanceof List<?> l) {
            return (List<Object>) l;
        }
        throw error(op + " on " + PickleAllowList.describe(o) + ", expected a list");
    }

    @SuppressWarnings("unchecked")
    private Map<Object, Object> dict(Object o, String op) {
        if (o instanceof Map<?, ?> m) {
            return (Map<Object, Object>) m;
        }
        throw error(op + " on " + PickleAllowList.describe(o) + ", expected a dict");
    }

    @SuppressWarnings("unchecked")
    private Set<Object> set(Object o, String op) {
        if (o instanceof LinkedHashSet<?> s) {
            return (Set<Object>) s;
        }
        throw error(op + " on " + PickleAllowList.describe(o) + ", expected a set");
    }

    private List<Object> tupleItems(Object args, String op) {
        if (args instanceof PyTuple t) {
            return t.items();
        }
        throw error(op + " arguments are " + PickleAllowList.describe(args) + ", expected a tuple");
    }

    private PyTuple tuple(int n) {
        if (stack.size() - baseOfStack() < n) {
            throw error("stack underflow building a " + n + "-tuple");
        }
        List<Object> items = new ArrayList<>(stack.subList(stack.size() - n, stack.size()));
        stack.subList(stack.size() - n, stack.size()).clear();
        return new PyTuple(items);
    }

    private Object memoGet(long index) {
        if (!memo.containsKey(index)) {
            throw error("memo index " + index + " was never stored");
        }
        return memo.get(index);
    }

    private Object longBytes(int n) {
        byte[] le = bytes(n);
        if (n == 0) {
            return 0L;
        }
        byte[] be = new byte[n];
        for (int i = 0; i < n; i++) {
            be[i] = le[n - 1 - i];
        }
        BigInteger v = new BigInteger(be);
        return v.bitLength() < 64 ? (Object) v.longValue() : v;
    }

    private String line() {
        int start = buf.position();
        for (int i = start; i < data.length; i++) {
            if (data[i] == '\n') {
                buf.position(i + 1);
                return new String(data, start, i - start, StandardCharsets.UTF_8);
            }
        }
        throw error("GLOBAL name runs past the end of the pickle");
    }

    private String utf8(byte[] b) {
        try {
            return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(b)).toString();
        } catch (CharacterCodingException e) {
            throw error("string is not valid UTF-8");
        }
    }

    private static String latin1(byte[] b) {
        return new String(b, StandardCharsets.ISO_8859_1);
    }

    private int length(long n) {
        if (n < 0 || n > buf.remaining()) {
            throw error("length " + n + " runs past the end of the pickle (" + buf.remaining() + " bytes left)");
        }
        return (int) n;
    }

    private byte[] bytes(int n) {
        byte[] b = new byte[n];
        need(n).get(b);
        return b;
    }

    private int u8() {
        return need(1).get() & 0xFF;
    }

    private ByteBuffer need(int n) {
        if (buf.remaining() < n) {
            throw error("opcode argument runs past the end of the pickle (truncated?)");
        }
        return buf;
    }

    private void push(Object o) {
        stack.add(o);
    }

    private Object pop() {
        if (stack.size() <= baseOfStack()) {
            throw error("stack underflow");
        }
        return stack.remove(stack.size() - 1);
    }

    private Object peek() {
        if (stack.size() <= baseOfStack()) {
            throw error("stack underflow");
        }
        return stack.get(stack.size() - 1);
    }

    private int baseOfStack() {
        return marks.isEmpty() ? 0 : marks.get(marks.size() - 1);
    }

    private List<Object> popMark() {
        if (marks.isEmpty()) {
            throw error("no MARK to pop to");
        }
        int m = marks.remove(marks.size() - 1);
        List<Object> items = new ArrayList<>(stack.subList(m, stack.size()));
        stack.subList(m, stack.size()).clear();
        return items;
    }

    private String at() {
        return where + " (pickle byte " + opStart + ")";
    }

    private TorchFormatException error(String message) {
        return new TorchFormatException(at() + ": " + message);
    }
}
