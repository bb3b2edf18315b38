package org.djlmegatron.io.torch;

import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Writes a {@code torch.save} archive in PyTorch's layout, streaming: the pickled object first
 * (its {@link TorchTensor}s declared contiguous, each owning a storage), then each storage's bytes
 * as they become available, in any order, then the directory. Memory holds the pickle and one
 * storage at a time, so many archives (one per model-parallel rank) can be filled in step.
 *
 * <p>The archive goes into a channel at a position; its offsets are relative to that position,
 * so it can be a file of its own or an item inside a {@code .distcp} file.
 */
public final class TorchSaveWriter {

    private final StoredZipWriter zip;
    private final String prefix;
    private final Map<String, TorchStorage> pending = new LinkedHashMap<>();
    private final String where;

    private TorchSaveWriter(StoredZipWriter zip, String prefix, String where) {
        this.zip = zip;
        this.prefix = prefix;
        this.where = where;
    }

    /**
     * Starts an archive and writes its pickle.
     *
     * @param out the channel written to (positional writes; the caller owns it)
     * @param position where the archive starts
     * @param archiveName the top-level directory in the zip ({@code torch.save} uses the file's
     *     stem, or {@code archive} for in-memory buffers)
     * @param root the object; every {@link TorchTensor} in it must be contiguous with offset 0 and
     *     its own storage key
     * @param tensors those tensors (the caller built them, so it lists them)
     * @param where names the target in errors
     */
    public static TorchSaveWriter begin(FileChannel out, long position, String archiveName, Object root,
            Collection<TorchTensor> tensors, String where) {
        TorchSaveWriter w = new TorchSaveWriter(new StoredZipWriter(out, position, where), archiveName + "/", where);
        for (TorchTensor t : tensors) {
            if (t.offset() != 0 || !t.isContiguous() || t.numel() != t.storage().numel()) {
                throw new IllegalArgumentException(where + ": " + t + " must be contiguous and own its storage");
            }
            if (w.pending.put(t.storage().key(), t.storage()) != null) {
                throw new IllegalArgumentException(where + ": storage key '" + t.storage().key() + "' is used twice");
            }
        }
        w.zip.putEntry(w.prefix + "data.pkl", PickleWriter.write(root));
        w.zip.putEntry(w.prefix + ".format_version", ascii("1"));
        w.zip.putEntry(w.prefix + ".storage_alignment", ascii(String.valueOf(StoredZipWriter.ALIGNMENT)));
        w.zip.putEntry(w.prefix + "byteorder", ascii("little"));
        return w;
    }

    /** Writes a storage's bytes (little-endian elements), all at once. */
    public void writeStorage(String key, ByteBuffer data) {
        TorchStorage s = pending.remove(key);
        if (s == null) {
            throw new IllegalArgumentException(where + ": storage '" + key + "' is not declared or already written");
        }
        long bytes = s.numel() * s.dtype().elementSize();
        if (data.remaining() != bytes) {
            throw new IllegalArgumentException(where + ": storage '" + key + "' needs " + bytes + " bytes ("
                    + s.numel() + " " + s.dtype().code() + "), found " + data.remaining());
        }
        zip.beginEntry(prefix + "data/" + key, bytes);
        zip.write(data);
        zip.endEntry();
    }

    /** Writes the version record and the directory; returns the archive's length in bytes. */
    public long finish() {
        if (!pending.isEmpty()) {
            throw new IllegalStateException(where + ": storages never written: " + pending.keySet());
        }
        zip.putEntry(prefix + "version", ascii("3\n"));
        return zip.finish();
    }

    private static byte[] ascii(String s) {
        return s.getBytes(StandardCharsets.US_ASCII);
    }
}
