package org.djlmegatron.io.torch;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.CRC32;

/**
 * Writes a zip archive of stored (uncompressed) entries into a file channel at a base position,
 * as {@code torch.save} lays them out: every entry's data starts on a 64-byte boundary of the
 * archive (padding goes into an extra field), zip64 records are written for large archives.
 * Entry data can be streamed in pieces; sizes are declared up front and the CRC-32 is patched into
 * the local header once the data is complete. Offsets in the archive are relative to its start,
 * so an archive can be embedded in a larger file (a {@code .distcp}).
 */
final class StoredZipWriter {

    static final int ALIGNMENT = 64;
    private static final short PADDING_ID = 0x4246; // "FB", as PyTorch's writer tags it
    private static final short ZIP64_ID = 1;

    private record Written(String name, long localOffset, long size, long crc) {}

    private final FileChannel out;
    private final String where;
    private final long base;
    private final List<Written> written = new ArrayList<>();
    private long pos; // relative to base
    private String openName;
    private long openLocal;
    private long openSize;
    private long openWritten;
    private CRC32 openCrc;

    StoredZipWriter(FileChannel out, long base, String where) {
        this.out = out;
        this.base = base;
        this.where = where;
    }

    /** Writes a complete small entry. */
    void putEntry(String name, byte[] data) {
        beginEntry(name, data.length);
        write(ByteBuffer.wrap(data));
        endEntry();
    }

    /** Starts an entry of exactly {@code size} bytes; follow with {@link #write} calls and {@link #endEntry}. */
    void beginEntry(String name, long size) {
        if (openName != null) {
            throw new IllegalStateException(where + ": entry '" + openName + "' is still open");
        }
        byte[] nameBytes = name.getBytes(StandardCharsets.UTF_8);
        boolean zip64 = size >= StoredZip.MAX32 || pos >= StoredZip.MAX32;
        int fixed = 30 + nameBytes.length + (zip64 ? 20 : 0) + 4;
        int pad = (int) ((ALIGNMENT - (pos + fixed) % ALIGNMENT) % ALIGNMENT);
        ByteBuffer h = ByteBuffer.allocate(fixed + pad).order(ByteOrder.LITTLE_ENDIAN);
        h.putInt(StoredZip.LOCAL_SIG).putShort((short) (zip64 ? 45 : 20)).putShort((short) 0)
                .putShort((short) 0).putInt(0) // method stored, time/date zero as PyTorch writes
                .putInt(0); // CRC-32, patched in endEntry
        int size32 = zip64 ? -1 : (int) size;
        h.putInt(size32).putInt(size32).putShort((short) nameBytes.length)
                .putShort((short) (h.capacity() - 30 - nameBytes.length)).put(nameBytes);
        if (zip64) {
            h.putShort(ZIP64_ID).putShort((short) 16).putLong(size).putLong(size);
        }
        h.putShort(PADDING_ID).putShort((short) pad).put(new byte[pad]);
        openName = name;
        openLocal = pos;
        openSize = size;
        openWritten = 0;
        openCrc = new CRC32();
        writeRaw(h.flip());
    }

    /** Appends data to the open entry. */
    void write(ByteBuffer data) {
        if (openName == null) {
            throw new IllegalStateException(where + ": no entry is open");
        }
        if (data.remaining() > openSize - openWritten) {
            throw new IllegalArgumentException(where + ": entry '" + openName + "' was declared with " + openSize
                    + " bytes, more are being written");
        }
        openWritten += data.remaining();
        openCrc.update(data.duplicate());
        writeRaw(data);
    }

    /** Closes the open entry: checks its size and patches its CRC-32. */
    void endEntry() {
        if (openWritten != openSize) {
            throw new IllegalStateException(where + ": entry '" + openName + "' was declared with " + openSize
                    + " bytes, " + openWritten + " were written");
        }
        long crc = openCrc.getValue();
        ByteBuffer b = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt((int) crc).flip();
        writeAt(base + openLocal + 14, b);
        written.add(new Written(openName, openLocal, openSize, crc));
        openName = null;
    }

    /** Writes the central directory and the end records; returns the archive's length. */
    long finish() {
        if (openName != null) {
            throw new IllegalStateException(where + ": entry '" + openName + "' is still open");
        }
        long cdStart = pos;
        for (Written w : written) {
            byte[] name = w.name().getBytes(StandardCharsets.UTF_8);
            boolean zip64 = w.size() >= StoredZip.MAX32 || w.localOffset() >= StoredZip.MAX32;
            ByteBuffer c = ByteBuffer.allocate(46 + name.length + (zip64 ? 28 : 0)).order(ByteOrder.LITTLE_ENDIAN);
            int size32 = zip64 ? -1 : (int) w.size();
            c.putInt(StoredZip.CENTRAL_SIG).putShort((short) (zip64 ? 45 : 20)).putShort((short) (zip64 ? 45 : 20))
                    .putShort((short) 0).putShort((short) 0).putInt(0).putInt((int) w.crc())
                    .putInt(size32).putInt(size32).putShort((short) name.length)
                    .putShort((short) (zip64 ? 28 : 0)).putShort((short) 0).putShort((short) 0)
                    .putShort((short) 0).putInt(0).putInt(zip64 ? -1 : (int) w.localOffset()).put(name);
            if (zip64) {
                c.putShort(ZIP64_ID).putShort((short) 24).putLong(w.size()).putLong(w.size()).putLong(w.localOffset());
            }
            writeRaw(c.flip());
        }
        long cdSize = pos - cdStart;
        long zip64Eocd = pos;
        // PyTorch always writes the zip64 records; readers that do not need them skip them
        ByteBuffer end = ByteBuffer.allocate(56 + 20 + 22).order(ByteOrder.LITTLE_ENDIAN);
        end.putInt(StoredZip.ZIP64_EOCD_SIG).putLong(44).putShort((short) 45).putShort((short) 45)
                .putInt(0).putInt(0).putLong(written.size()).putLong(written.size()).putLong(cdSize).putLong(cdStart);
        end.putInt(StoredZip.ZIP64_LOCATOR_SIG).putInt(0).putLong(zip64Eocd).putInt(1);
        int count16 = (int) Math.min(written.size(), 0xFFFF);
        end.putInt(StoredZip.EOCD_SIG).putShort((short) 0).putShort((short) 0).putShort((short) count16)
                .putShort((short) count16).putInt((int) Math.min(cdSize, StoredZip.MAX32))
                .putInt((int) Math.min(cdStart, StoredZip.MAX32)).putShort((short) 0);
        writeRaw(end.flip());
        return pos;
    }

    private void writeRaw(ByteBuffer b) {
        int n = b.remaining();
        writeAt(base + pos, b);
        pos += n;
    }

    private void writeAt(long at, ByteBuffer b) {
        try {
            PositionalIo.writeFully(out, b, at);
        } catch (IOException e) {
            throw new TorchFormatException(where + ": write failed: " + e, e);
        }
    }
}
