package org.djlmegatron.io.torch;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import org.djlmegatron.io.SafetensorsDType;

/**
 * A PyTorch distributed checkpoint ({@code torch.distributed.checkpoint}, DCP) directory, as
 * Megatron's {@code torch_dist} format writes it: a pickled {@code .metadata} listing every key
 * (tensors with their global size and stored chunks; byte items) and where each stored item lives,
 * and {@code __R_S.distcp} files holding the items, each a {@code torch.save} archive.
 *
 * <p>{@link #read} assembles any box of a global tensor from the chunks that overlap it, reading
 * only the overlapping bytes, so a reader can take one layer or one tensor-parallel shard at a
 * time. Thread-safe.
 */
public final class DcpCheckpoint implements AutoCloseable {

    public static final String METADATA_FILE = ".metadata";

    private final Path dir;
    private final Map<String, DcpTensor> tensors;
    private final Map<String, DcpChunk> objects;
    private final Map<String, FileChannel> files = new ConcurrentHashMap<>();
    private final Map<DcpChunk, TorchArchive> archives = new ConcurrentHashMap<>();
    private volatile boolean closed;

    private DcpCheckpoint(Path dir, Map<String, DcpTensor> tensors, Map<String, DcpChunk> objects) {
        this.dir = dir;
        this.tensors = tensors;
        this.objects = objects;
    }

    /** Reads {@code dir/.metadata}. */
    public static DcpCheckpoint open(Path dir) {
        Path meta = dir.resolve(METADATA_FILE);
        if (!Files.isRegularFile(meta)) {
            throw new TorchFormatException(dir + ": no " + METADATA_FILE + " file (not a distributed checkpoint)");
        }
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(meta);
        } catch (IOException e) {
            throw new TorchFormatException(meta + ": cannot read: " + e, e);
        }
        Object root = PickleReader.load(bytes, meta.toString(), PickleAllowList.TORCH, null);
        return parse(dir, meta.toString(), root);
    }

    private static DcpCheckpoint parse(Path dir, String where, Object root) {
        PyObject metadata = object(root, "Metadata", where);
        Map<?, ?> stateDict = map(metadata.fields().get("state_dict_metadata"), where + " state_dict_metadata");
        Map<?, ?> storage = map(metadata.fields().get("storage_data"), where + " storage_data");
        Map<String, Map<List<Long>, DcpChunk>> located = new HashMap<>();
        for (Map.Entry<?, ?> e : storage.entrySet()) {
            PyObject index = object(e.getKey(), "MetadataIndex", where);
            PyObject info = object(e.getValue(), "_StorageInfo", where);
            String fqn = string(index.fields().get("fqn"), where + " MetadataIndex.fqn");
            Object offset = index.fields().get("offset");
            List<Long> at = offset instanceof TorchSize s ? s.dims() : List.of();
            String in = where + " storage of '" + fqn + "'";
            DcpChunk c = new DcpChunk(toArray(at), new long[0], string(info.fields().get("relative_path"), in),
                    number(info.fields().get("offset"), in), number(info.fields().get("length"), in));
            located.computeIfAbsent(fqn, k -> new HashMap<>()).put(at, c);
        }
        Map<String, DcpTensor> tensors = new LinkedHashMap<>();
        Map<String, DcpChunk> objects = new LinkedHashMap<>();
        for (Map.Entry<?, ?> e : stateDict.entrySet()) {
            String key = string(e.getKey(), where + " state_dict_metadata key");
            PyObject m = object(e.getValue(), null, where);
            String kind = m.type().name();
            Map<List<Long>, DcpChunk> stored = located.getOrDefault(key, Map.of());
            if (kind.equals("BytesStorageMetadata")) {
                DcpChunk c = stored.get(List.of());
                if (c == null) {
                    throw new TorchFormatException(where + ": byte item '" + key + "' has no storage_data entry");
                }
                objects.put(key, c);
            } else if (kind.equals("TensorStorageMetadata")) {
                tensors.put(key, tensor(key, m, stored, where));
            } else {
                throw new TorchFormatException(where + ": key '" + key + "' has metadata of type " + m.type()
                        + ", expected TensorStorageMetadata or BytesStorageMetadata");
            }
        }
        return new DcpCheckpoint(dir, Collections.unmodifiableMap(tensors), Collections.unmodifiableMap(objects));
    }

    private static DcpTensor tensor(String key, PyObject m, Map<List<Long>, DcpChunk> stored, String where) {
        String in = where + " tensor '" + key + "'";
        SafetensorsDType dtype = dtype(object(m.fields().get("properties"), "TensorProperties", in), in);
        long[] size = size(m.fields().get("size"), in + " size");
        List<DcpChunk> chunks = new ArrayList<>();
        for (Object c : list(m.fields().get("chunks"), in + " chunks")) {
            PyObject chunk = object(c, "ChunkStorageMetadata", in);
            long[] offsets = size(chunk.fields().get("offsets"), in + " chunk offsets");
            long[] sizes = size(chunk.fields().get("sizes"), in + " chunk sizes");
            if (offsets.length != size.length || sizes.length != size.length) {
                throw new TorchFormatException(in + ": chunk " + Arrays.toString(offsets) + " has "
                        + offsets.length + " dimensions, the tensor " + size.length);
            }
            for (int d = 0; d < size.length; d++) {
                if (offsets[d] + sizes[d] > size[d]) {
                    throw new TorchFormatException(in + ": chunk " + Arrays.toString(offsets) + "+"
                            + Arrays.toString(sizes) + " lies outside the tensor " + Arrays.toString(size));
                }
            }
            DcpChunk where0 = stored.get(Arrays.stream(offsets).boxed().toList());
            if (where0 == null) {
                throw new TorchFormatException(in + ": chunk at " + Arrays.toString(offsets)
                        + " has no storage_data entry");
            }
            chunks.add(new DcpChunk(offsets, sizes, where0.relativePath(), where0.fileOffset(), where0.length()));
        }
        return new DcpTensor(key, dtype, size, chunks);
    }

    private static SafetensorsDType dtype(PyObject properties, String where) {
        Object state = properties.state();
        Object dtype = state instanceof PyTuple t && t.size() > 0 ? t.get(0)
                : state instanceof Map<?, ?> m ? m.get("dtype") : null;
        SafetensorsDType d = dtype instanceof PyGlobal g && g.module().equals("torch")
                ? TorchTypes.ofDtypeConstant(g.name()) : null;
        if (d == null) {
            throw new TorchFormatException(where + ": properties dtype " + PickleAllowList.describe(dtype)
                    + " is not a supported torch dtype");
        }
        return d;
    }

    /** The directory. */
    public Path directory() {
        return dir;
    }

    /** Tensor keys with their metadata, in the order {@code .metadata} lists them. */
    public Map<String, DcpTensor> tensors() {
        return tensors;
    }

    /** Keys of the byte items (pickled objects: Megatron's common state, extra states). */
    public Set<String> objectKeys() {
        return new LinkedHashSet<>(objects.keySet());
    }

    /**
     * The box {@code [offsets, offsets + sizes)} of a global tensor, row-major little-endian bytes,
     * assembled from every chunk that overlaps it.
     *
     * @throws TorchFormatException when the chunks do not cover the box or disagree with the metadata
     */
    public byte[] read(String key, long[] offsets, long[] sizes) {
        DcpTensor t = tensors.get(key);
        if (t == null) {
            throw new IllegalArgumentException(dir + ": no tensor '" + key + "'");
        }
        long[] global = t.size();
        long volume = 1;
        for (int d = 0; d < global.length; d++) {
            if (offsets[d] < 0 || sizes[d] < 0 || offsets[d] + sizes[d] > global[d]) {
                throw new IllegalArgumentException(dir + ": box " + Arrays.toString(offsets) + "+"
                        + Arrays.toString(sizes) + " lies outside '" + key + "' " + Arrays.toString(global));
            }
            volume *= sizes[d];
        }
        long bytes = volume * t.dtype().elementSize();
        if (bytes > Integer.MAX_VALUE - 8) {
            throw new TorchFormatException(dir + ": box of '" + key + "' has " + bytes
                    + " bytes, more than one Java array holds");
        }
        byte[] out = new byte[(int) bytes];
        long covered = 0;
        for (DcpChunk c : t.chunks()) {
            long[] co = c.offsets();
            long[] cs = c.sizes();
            long[] from = new long[global.length];
            long[] len = new long[global.length];
            long[] to = new long[global.length];
            long v = 1;
            for (int d = 0; d < global.length; d++) {
                long lo = Math.max(co[d], offsets[d]);
                long hi = Math.min(co[d] + cs[d], offsets[d] + sizes[d]);
                len[d] = Math.max(0, hi - lo);
                from[d] = lo - co[d];
                to[d] = lo - offsets[d];
                v *= len[d];
            }
            if (v == 0) {
                continue;
            }
            TorchTensor chunk = chunkTensor(t, c);
            archive(c).copyBox(chunk, from, len, out, sizes, to);
            covered += v;
        }
        if (covered != volume) {
            throw new TorchFormatException(dir + ": the chunks of '" + key + "' cover " + covered + " of the "
                    + volume + " elements of box " + Arrays.toString(offsets) + "+" + Arrays.toString(sizes));
        }
        return out;
    }

    /** The object stored under a byte-item key (unpickled with the allow-list). */
    public Object readObject(String key) {
        DcpChunk c = objects.get(key);
        if (c == null) {
            throw new IllegalArgumentException(dir + ": no byte item '" + key + "'");
        }
        return archive(c).root();
    }

    private TorchTensor chunkTensor(DcpTensor t, DcpChunk c) {
        TorchArchive a = archive(c);
        if (!(a.root() instanceof TorchTensor tensor)) {
            throw new TorchFormatException(a.describe() + ": item of '" + t.key() + "' holds "
                    + PickleAllowList.describe(a.root()) + ", expected a tensor");
        }
        if (!Arrays.equals(tensor.shape(), c.sizes()) || tensor.dtype() != t.dtype()) {
            throw new TorchFormatException(a.describe() + ": item of '" + t.key() + "' is "
                    + tensor.dtype().code() + " " + Arrays.toString(tensor.shape()) + ", the metadata says "
                    + t.dtype().code() + " " + Arrays.toString(c.sizes()));
        }
        return tensor;
    }

    private TorchArchive archive(DcpChunk c) {
        return archives.computeIfAbsent(c, k -> TorchArchive.open(
                new FileSlice(dir.resolve(k.relativePath()), channel(k.relativePath()), k.fileOffset(), k.length())));
    }

    private FileChannel channel(String relativePath) {
        if (closed) {
            throw new IllegalStateException(dir + ": checkpoint is closed");
        }
        Path file = dir.resolve(relativePath).normalize();
        if (!dir.toAbsolutePath().normalize().equals(file.toAbsolutePath().getParent())) {
            throw new TorchFormatException(dir + ": storage file '" + relativePath
                    + "' is not a file of the checkpoint directory");
        }
        return files.computeIfAbsent(relativePath, p -> {
            try {
                return FileChannel.open(file, StandardOpenOption.READ);
            } catch (IOException e) {
                throw new TorchFormatException(file + ": cannot open: " + e, e);
            }
        });
    }

    @Override
    public void close() {
        closed = true;
        for (FileChannel c : files.values()) {
            try {
                c.close();
            } catch (IOException ignored) {
                // read-only channels: nothing was lost
            }
        }
    }

    private static PyObject object(Object o, String type, String where) {
        if (o instanceof PyObject p && (type == null || p.type().name().equals(type))) {
            return p;
        }
        throw new TorchFormatException(where + ": expected " + (type == null ? "an object" : type) + ", found "
                + PickleAllowList.describe(o));
    }

    private static Map<?, ?> map(Object o, String where) {
        if (o instanceof Map<?, ?> m) {
            return m;
        }
        throw new TorchFormatException(where + ": expected a dict, found " + PickleAllowList.describe(o));
    }

    private static List<?> list(Object o, String where) {
        if (o instanceof List<?> l) {
            return l;
        }
        throw new TorchFormatException(where + ": expected a list, found " + PickleAllowList.describe(o));
    }

    private static String string(Object o, String where) {
        if (o instanceof String s) {
            return s;
        }
        throw new TorchFormatException(where + ": expected a string, found " + PickleAllowList.describe(o));
    }

    private static long number(Object o, String where) {
        if (o instanceof Long l && l >= 0) {
            return l;
        }
        throw new TorchFormatException(where + ": expected a non-negative integer, found "
                + PickleAllowList.describe(o));
    }

    private static long[] size(Object o, String where) {
        if (o instanceof TorchSize s) {
            return s.toArray();
        }
        throw new TorchFormatException(where + ": expected a torch.Size, found " + PickleAllowList.describe(o));
    }

    private static long[] toArray(List<Long> l) {
        return l.stream().mapToLong(Long::longValue).toArray();
    }
}
