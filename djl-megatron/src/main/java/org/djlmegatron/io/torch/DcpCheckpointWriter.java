package org.djlmegatron.io.torch;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import org.djlmegatron.io.SafetensorsDType;

/**
 * Writes a PyTorch distributed checkpoint the way {@code torch.distributed.checkpoint} does from a
 * single writer: one {@code __0_0.distcp} file of {@code torch.save} items (one per tensor chunk
 * or object) and a pickled {@code .metadata} naming every key, its global size and chunks, and
 * each item's place. Chunks are streamed in; memory holds one chunk and the metadata.
 */
public final class DcpCheckpointWriter implements AutoCloseable {

    public static final String DATA_FILE = "__0_0.distcp";
    private static final String M = "torch.distributed.checkpoint.metadata.";

    private record Chunk(long[] offsets, long[] sizes, long fileOffset, long length) {}

    private record Entry(SafetensorsDType dtype, long[] size, List<Chunk> chunks) {}

    private final Path dir;
    private final FileChannel out;
    private final Map<String, Entry> tensors = new LinkedHashMap<>();
    private final Map<String, long[]> objects = new LinkedHashMap<>();
    private long position;

    private DcpCheckpointWriter(Path dir, FileChannel out) {
        this.dir = dir;
        this.out = out;
    }

    /** Starts a checkpoint in {@code dir} (which must exist and not yet hold one). */
    public static DcpCheckpointWriter create(Path dir) {
        try {
            return new DcpCheckpointWriter(dir, FileChannel.open(dir.resolve(DATA_FILE),
                    StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE));
        } catch (IOException e) {
            throw new TorchFormatException(dir.resolve(DATA_FILE) + ": cannot create: " + e, e);
        }
    }

    /**
     * Writes one chunk of a global tensor.
     *
     * @param key the state-dict key
     * @param dtype element type (the same for every chunk of a key)
     * @param globalSize the whole tensor's shape (the same for every chunk of a key)
     * @param offsets where the chunk starts in the global tensor
     * @param sizes the chunk's shape
     * @param data the chunk's elements, row-major little-endian
     */
    public void writeChunk(String key, SafetensorsDType dtype, long[] globalSize, long[] offsets, long[] sizes,
            ByteBuffer data) {
        Entry e = tensors.computeIfAbsent(key, k -> new Entry(dtype, globalSize.clone(), new ArrayList<>()));
        if (e.dtype() != dtype || !Arrays.equals(e.size(), globalSize)) {
            throw new IllegalArgumentException(dir + ": chunk of '" + key + "' is " + dtype.code() + " of "
                    + Arrays.toString(globalSize) + ", earlier chunks said " + e.dtype().code() + " of "
                    + Arrays.toString(e.size()));
        }
        TorchTensor t = TorchTensor.contiguous("0", dtype, sizes);
        long start = position;
        TorchSaveWriter w = TorchSaveWriter.begin(out, start, "archive", t, List.of(t), describe(key));
        w.writeStorage("0", data);
        position = start + w.finish();
        e.chunks().add(new Chunk(offsets.clone(), sizes.clone(), start, position - start));
    }

    /** Writes a byte item: {@code value} as {@code torch.save} would store it. */
    public void writeObject(String key, Object value) {
        long start = position;
        TorchSaveWriter w = TorchSaveWriter.begin(out, start, "archive", value, List.of(), describe(key));
        position = start + w.finish();
        if (objects.put(key, new long[] {start, position - start}) != null) {
            throw new IllegalArgumentException(dir + ": byte item '" + key + "' written twice");
        }
    }

    /**
     * Syncs the data file and writes {@code .metadata}.
     *
     * @param checkpointId recorded as the storage's checkpoint id (the final directory)
     */
    public void finish(String checkpointId) {
        Map<Object, Object> stateDict = new LinkedHashMap<>();
        Map<Object, Object> storage = new LinkedHashMap<>();
        objects.forEach((key, where) -> {
            stateDict.put(key, PyObject.withFields(M + "BytesStorageMetadata", null));
            storage.put(index(key, null), storageInfo(where[0], where[1]));
        });
        tensors.forEach((key, e) -> {
            List<Object> chunks = new ArrayList<>();
            for (Chunk c : e.chunks()) {
                Map<String, Object> f = new LinkedHashMap<>();
                f.put("offsets", TorchSize.of(c.offsets()));
                f.put("sizes", TorchSize.of(c.sizes()));
                chunks.add(PyObject.withFields(M + "ChunkStorageMetadata", f));
                storage.put(index(key, c.offsets()), storageInfo(c.fileOffset(), c.length()));
            }
            Map<String, Object> f = new LinkedHashMap<>();
            f.put("properties", properties(e.dtype()));
            f.put("size", TorchSize.of(e.size()));
            f.put("chunks", chunks);
            stateDict.put(key, PyObject.withFields(M + "TensorStorageMetadata", f));
        });
        Map<String, Object> meta = new LinkedHashMap<>();
        meta.put("checkpoint_id", checkpointId);
        meta.put("save_id", UUID.randomUUID().toString());
        meta.put("load_id", null);
        meta.put("modules", new ArrayList<>());
        Map<String, Object> fields = new LinkedHashMap<>();
        fields.put("state_dict_metadata", stateDict);
        fields.put("planner_data", null);
        fields.put("storage_data", storage);
        fields.put("storage_meta", PyObject.withFields(M + "StorageMeta", meta));
        fields.put("version", "1.0.0");
        try {
            out.force(true);
            Files.write(dir.resolve(DcpCheckpoint.METADATA_FILE),
                    PickleWriter.write(PyObject.withFields(M + "Metadata", fields)), StandardOpenOption.CREATE_NEW,
                    StandardOpenOption.WRITE);
        } catch (IOException e) {
            throw new TorchFormatException(dir + ": writing " + DcpCheckpoint.METADATA_FILE + " failed: " + e, e);
        }
    }

    /** TensorProperties as PyTorch pickles them: (dtype, layout, requires_grad, memory_format, pin_memory). */
    private static PyObject properties(SafetensorsDType dtype) {
        PyTuple state = PyTuple.of(TorchTypes.dtypeConstant(dtype),
                PyObject.called("torch.serialization._get_layout", "torch.strided"), false,
                PyObject.called(M + "_MEM_FORMAT_ENCODING", 0L), false);
        return new PyObject(PyGlobal.parse(M + "TensorProperties"), List.of(), PyObject.Creation.NEWOBJ, state);
    }

    /** MetadataIndex: PyTorch leaves {@code offset} out of the instance dict for byte items. */
    private static PyObject index(String fqn, long[] offsets) {
        Map<String, Object> f = new LinkedHashMap<>();
        f.put("fqn", fqn);
        f.put("index", null);
        if (offsets != null) {
            f.put("offset", TorchSize.of(offsets));
        }
        return PyObject.withFields(M + "MetadataIndex", f);
    }

    private static PyObject storageInfo(long offset, long length) {
        Map<String, Object> f = new LinkedHashMap<>();
        f.put("relative_path", DATA_FILE);
        f.put("offset", offset);
        f.put("length", length);
        return PyObject.withFields("torch.distributed.checkpoint.filesystem._StorageInfo", f);
    }

    private String describe(String key) {
        return dir.resolve(DATA_FILE) + " item '" + key + "'";
    }

    @Override
    public void close() {
        try {
            out.close();
        } catch (IOException e) {
            throw new TorchFormatException(dir.resolve(DATA_FILE) + ": close failed: " + e, e);
        }
    }
}
