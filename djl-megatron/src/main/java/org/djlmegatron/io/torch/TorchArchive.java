package org.djlmegatron.io.torch;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.djlmegatron.io.SafetensorsDType;

/**
 * A {@code torch.save} archive (PyTorch's zip format): {@code <name>/data.pkl} with the pickled
 * object, {@code <name>/data/<key>} with one raw storage per key, {@code <name>/byteorder} and
 * {@code <name>/version}. Opening reads the directory and unpickles the object with
 * {@link PickleAllowList#TORCH}; tensors come back as {@link TorchTensor} views and their bytes
 * are read on demand, touching only the bytes asked for. Thread-safe after opening.
 */
public final class TorchArchive {

    private static final String PICKLE = "data.pkl";

    private final StoredZip zip;
    private final String prefix;
    private final Map<String, TorchStorage> storages = new HashMap<>();
    private final Object root;

    private TorchArchive(StoredZip zip, String prefix) {
        this.zip = zip;
        this.prefix = prefix;
        checkByteOrder();
        StoredZip.Entry pickle = zip.entries().get(prefix + PICKLE);
        this.root = PickleReader.load(zip.readVerified(pickle), describe() + " " + pickle.name(),
                PickleAllowList.TORCH, this::storage);
    }

    /** Opens the archive occupying {@code slice} and unpickles its object. */
    public static TorchArchive open(FileSlice slice) {
        StoredZip zip = StoredZip.read(slice);
        List<String> pickles = zip.entries().keySet().stream()
                .filter(n -> n.equals(PICKLE) || n.endsWith("/" + PICKLE)).toList();
        if (pickles.size() != 1) {
            throw new TorchFormatException(slice.describe() + ": expected one '<name>/" + PICKLE
                    + "' entry (a torch.save archive), found " + pickles);
        }
        String p = pickles.get(0);
        return new TorchArchive(zip, p.substring(0, p.length() - PICKLE.length()));
    }

    /** The file (or file range) in error messages. */
    public String describe() {
        return zip.slice().describe();
    }

    /** The unpickled object (maps, lists, {@link TorchTensor}s, ...). */
    public Object root() {
        return root;
    }

    private void checkByteOrder() {
        StoredZip.Entry e = zip.entries().get(prefix + "byteorder");
        if (e != null) {
            String order = new String(zip.readVerified(e), StandardCharsets.US_ASCII).strip();
            if (!order.equals("little")) {
                throw new TorchFormatException(describe() + ": entry '" + e.name() + "' says '" + order
                        + "', only little-endian archives are supported");
            }
        }
    }

    /** persistent_load: {@code ('storage', StorageClass, key, location, numel)}. */
    private Object storage(Object pid, String where) {
        if (!(pid instanceof PyTuple t) || t.size() < 5 || !"storage".equals(t.get(0))
                || !(t.get(1) instanceof PyGlobal cls) || !(t.get(2) instanceof String key)
                || !(t.get(4) instanceof Long numel)) {
            throw new TorchFormatException(where + ": persistent id " + PickleAllowList.describe(pid)
                    + " is not ('storage', <StorageClass>, key, location, numel)");
        }
        SafetensorsDType dtype = TorchTypes.ofStorageClass(cls.name());
        if (!cls.module().equals("torch") || dtype == null) {
            throw new TorchFormatException(where + ": storage class '" + cls + "' is not a supported typed storage");
        }
        StoredZip.Entry entry = zip.entries().get(prefix + "data/" + key);
        if (entry == null) {
            throw new TorchFormatException(where + ": storage '" + key + "' has no entry '" + prefix + "data/" + key + "'");
        }
        long bytes = Math.multiplyExact(numel, (long) dtype.elementSize());
        if (entry.size() < bytes) {
            throw new TorchFormatException(where + ": storage entry '" + entry.name() + "' holds " + entry.size()
                    + " bytes, shorter than the " + numel + " " + dtype.code() + " elements (" + bytes
                    + " bytes) its persistent id declares");
        }
        TorchStorage s = new TorchStorage(key, dtype, numel);
        TorchStorage previous = storages.putIfAbsent(key, s);
        if (previous != null && !previous.equals(s)) {
            throw new TorchFormatException(where + ": storage '" + key + "' is declared twice, as " + previous
                    + " and " + s);
        }
        return s;
    }

    /** The tensor's elements, row-major, little-endian. */
    public byte[] readTensor(TorchTensor t) {
        long[] shape = t.shape();
        long bytes = t.byteLength();
        if (bytes > Integer.MAX_VALUE - 8) {
            throw new TorchFormatException(describe() + ": tensor of shape " + Arrays.toString(shape) + " has "
                    + bytes + " bytes, more than one Java array holds");
        }
        byte[] out = new byte[(int) bytes];
        copyBox(t, new long[shape.length], shape, out, shape, new long[shape.length]);
        return out;
    }

    /**
     * Copies the box {@code [start, start + size)} of tensor {@code t} into {@code dst}, a row-major
     * array of shape {@code dstShape}, at {@code dstStart}. Reads only the box's bytes, in runs as
     * long as the layouts allow.
     */
    public void copyBox(TorchTensor t, long[] start, long[] size, byte[] dst, long[] dstShape, long[] dstStart) {
        StoredZip.Entry entry = entryOf(t);
        checkView(t, entry);
        long[] shape = t.shape();
        long[] stride = t.stride();
        int n = shape.length;
        int es = t.dtype().elementSize();
        long[] dstStride = TorchTensor.rowMajorStrides(dstShape);
        for (int d = 0; d < n; d++) {
            if (start[d] < 0 || size[d] < 0 || start[d] + size[d] > shape[d]
                    || dstStart[d] < 0 || dstStart[d] + size[d] > dstShape[d]) {
                throw new IllegalArgumentException(describe() + ": box " + Arrays.toString(start) + "+"
                        + Arrays.toString(size) + " does not fit tensor " + Arrays.toString(shape)
                        + " or destination " + Arrays.toString(dstShape));
            }
            if (size[d] == 0) {
                return;
            }
        }
        // merge trailing dimensions into one run while both sides stay contiguous
        int outer = n;
        long run = 1;
        long span = 1;
        while (outer > 0) {
            int d = outer - 1;
            boolean inner = d == n - 1 || (size[d + 1] == shape[d + 1] && size[d + 1] == dstShape[d + 1]);
            if (!inner || (size[d] > 1 && stride[d] != span)) {
                break;
            }
            run *= size[d];
            span *= shape[d];
            outer--;
        }
        long srcBase = t.offset();
        long dstBase = 0;
        for (int d = 0; d < n; d++) {
            srcBase += start[d] * stride[d];
            dstBase += dstStart[d] * dstStride[d];
        }
        long[] idx = new long[outer];
        FileSlice file = zip.slice();
        String what = "storage '" + entry.name() + "'";
        while (true) {
            long src = srcBase;
            long dstElem = dstBase;
            for (int d = 0; d < outer; d++) {
                src += idx[d] * stride[d];
                dstElem += idx[d] * dstStride[d];
            }
            file.read(entry.dataOffset() + src * es, ByteBuffer.wrap(dst, (int) (dstElem * es), (int) (run * es)), what);
            int d = outer - 1;
            while (d >= 0 && ++idx[d] == size[d]) {
                idx[d] = 0;
                d--;
            }
            if (d < 0) {
                return;
            }
        }
    }

    private StoredZip.Entry entryOf(TorchTensor t) {
        TorchStorage s = storages.get(t.storage().key());
        if (s == null || !s.equals(t.storage())) {
            throw new IllegalArgumentException(describe() + ": " + t + " does not belong to this archive");
        }
        return zip.entries().get(prefix + "data/" + s.key());
    }

    /** Fails when the view reaches past its storage (a corrupt or hand-made archive). */
    private void checkView(TorchTensor t, StoredZip.Entry entry) {
        long[] shape = t.shape();
        long[] stride = t.stride();
        long last = t.offset();
        for (int d = 0; d < shape.length; d++) {
            if (shape[d] == 0) {
                return;
            }
            last += (shape[d] - 1) * stride[d];
        }
        if (t.offset() < 0 || last >= t.storage().numel()) {
            throw new TorchFormatException(describe() + ": tensor view (offset " + t.offset() + ", size "
                    + Arrays.toString(shape) + ", stride " + Arrays.toString(stride) + ") needs element " + last
                    + " but storage '" + entry.name() + "' is shorter: " + t.storage().numel() + " elements");
        }
    }
}
