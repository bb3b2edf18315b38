package org.djlmegatron.io.torch;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.zip.CRC32;

/**
 * The central directory of a zip archive whose entries are stored uncompressed, which is how
 * {@code torch.save} writes (PyTorch's {@code PyTorchStreamWriter}). Only the directory is read;
 * entry data stays on disk and is read by offset. Zip64 records are understood; compressed or
 * encrypted entries are refused.
 */
public final class StoredZip {

    static final int LOCAL_SIG = 0x04034b50;
    static final int CENTRAL_SIG = 0x02014b50;
    static final int EOCD_SIG = 0x06054b50;
    static final int ZIP64_EOCD_SIG = 0x06064b50;
    static final int ZIP64_LOCATOR_SIG = 0x07064b50;
    static final long MAX32 = 0xFFFFFFFFL;
    private static final int EOCD_SIZE = 22;
    private static final int MAX_COMMENT = 0xFFFF;

    /**
     * One stored entry.
     *
     * @param name the entry name
     * @param dataOffset offset of its first data byte, relative to the archive
     * @param size data bytes
     * @param crc the CRC-32 the directory records
     */
    public record Entry(String name, long dataOffset, long size, long crc) {}

    private final FileSlice slice;
    private final Map<String, Entry> entries;

    private StoredZip(FileSlice slice, Map<String, Entry> entries) {
        this.slice = slice;
        this.entries = entries;
    }

    /** Reads and validates the directory of the archive occupying {@code slice}. */
    public static StoredZip read(FileSlice slice) {
        String where = slice.describe();
        long eocd = findEocd(slice);
        ByteBuffer e = le(slice.read(eocd, EOCD_SIZE, "end-of-central-directory record"));
        long count = e.getShort(10) & 0xFFFF;
        long cdSize = e.getInt(12) & MAX32;
        long cdOffset = e.getInt(16) & MAX32;
        if (eocd >= 20) {
            ByteBuffer loc = le(slice.read(eocd - 20, 20, "zip64 locator"));
            if (loc.getInt(0) == ZIP64_LOCATOR_SIG) {
                long z = loc.getLong(8);
                ByteBuffer z64 = le(slice.read(z, 56, "zip64 end-of-central-directory record"));
                if (z64.getInt(0) != ZIP64_EOCD_SIG) {
                    throw new TorchFormatException(where + ": zip64 end-of-central-directory record at " + z
                            + " has signature 0x" + Integer.toHexString(z64.getInt(0)) + ", expected 0x"
                            + Integer.toHexString(ZIP64_EOCD_SIG));
                }
                count = z64.getLong(32);
                cdSize = z64.getLong(40);
                cdOffset = z64.getLong(48);
            }
        }
        if (cdOffset < 0 || cdSize < 0 || cdOffset > slice.length() - cdSize || cdSize > Integer.MAX_VALUE) {
            throw new TorchFormatException(where + ": central directory [" + cdOffset + ", +" + cdSize
                    + ") does not fit in the " + slice.length() + "-byte archive (truncated?)");
        }
        ByteBuffer cd = le(slice.read(cdOffset, (int) cdSize, "central directory"));
        Map<String, Entry> out = new LinkedHashMap<>();
        for (long i = 0; i < count; i++) {
            Entry entry = readEntry(slice, cd, cdOffset);
            if (out.put(entry.name(), entry) != null) {
                throw new TorchFormatException(where + ": entry '" + entry.name() + "' appears twice");
            }
        }
        return new StoredZip(slice, Collections.unmodifiableMap(out));
    }

    private static Entry readEntry(FileSlice slice, ByteBuffer cd, long cdOffset) {
        String where = slice.describe();
        int p = cd.position();
        if (cd.remaining() < 46 || cd.getInt(p) != CENTRAL_SIG) {
            throw new TorchFormatException(where + ": central directory entry at " + (cdOffset + p)
                    + " is malformed (bad signature or short)");
        }
        int flags = cd.getShort(p + 8) & 0xFFFF;
        int method = cd.getShort(p + 10) & 0xFFFF;
        long crc = cd.getInt(p + 16) & MAX32;
        long compressed = cd.getInt(p + 20) & MAX32;
        long size = cd.getInt(p + 24) & MAX32;
        int nameLen = cd.getShort(p + 28) & 0xFFFF;
        int extraLen = cd.getShort(p + 30) & 0xFFFF;
        int commentLen = cd.getShort(p + 32) & 0xFFFF;
        long local = cd.getInt(p + 42) & MAX32;
        if (cd.remaining() < 46 + nameLen + extraLen + commentLen) {
            throw new TorchFormatException(where + ": central directory entry at " + (cdOffset + p) + " is truncated");
        }
        byte[] nameBytes = new byte[nameLen];
        cd.get(p + 46, nameBytes);
        String name = new String(nameBytes, StandardCharsets.UTF_8);
        // zip64: the 32-bit fields at their maximum are replaced, in order, by 64-bit ones
        int x = p + 46 + nameLen;
        int xEnd = x + extraLen;
        while (x + 4 <= xEnd) {
            int id = cd.getShort(x) & 0xFFFF;
            int len = cd.getShort(x + 2) & 0xFFFF;
            if (id == 1) {
                int f = x + 4;
                if (size == MAX32) {
                    size = cd.getLong(f);
                    f += 8;
                }
                if (compressed == MAX32) {
                    compressed = cd.getLong(f);
                    f += 8;
                }
                if (local == MAX32) {
                    local = cd.getLong(f);
                }
            }
            x += 4 + len;
        }
        cd.position(p + 46 + nameLen + extraLen + commentLen);
        if ((flags & 1) != 0) {
            throw new TorchFormatException(where + ": entry '" + name + "' is encrypted");
        }
        if (method != 0 || compressed != size) {
            throw new TorchFormatException(where + ": entry '" + name + "' is compressed (method " + method
                    + "); torch.save archives store entries uncompressed");
        }
        ByteBuffer lh = le(slice.read(local, 30, "local header of '" + name + "'"));
        if (lh.getInt(0) != LOCAL_SIG) {
            throw new TorchFormatException(where + ": local header of '" + name + "' at " + local
                    + " has a bad signature (truncated or not a zip archive)");
        }
        long dataOffset = local + 30 + (lh.getShort(26) & 0xFFFF) + (lh.getShort(28) & 0xFFFF);
        if (dataOffset > slice.length() - size || dataOffset + size > cdOffset) {
            throw new TorchFormatException(where + ": entry '" + name + "' data [" + dataOffset + ", +" + size
                    + ") runs past the end of the entries (truncated?)");
        }
        return new Entry(name, dataOffset, size, crc);
    }

    private static long findEocd(FileSlice slice) {
        long len = slice.length();
        if (len < EOCD_SIZE) {
            throw new TorchFormatException(slice.describe() + ": " + len
                    + " bytes is too short for a zip archive (truncated?)");
        }
        int window = (int) Math.min(len, EOCD_SIZE + MAX_COMMENT);
        ByteBuffer tail = le(slice.read(len - window, window, "end of archive"));
        for (int i = window - EOCD_SIZE; i >= 0; i--) {
            if (tail.getInt(i) == EOCD_SIG) {
                return len - window + i;
            }
        }
        throw new TorchFormatException(slice.describe()
                + ": no end-of-central-directory record: not a zip archive, or truncated");
    }

    private static ByteBuffer le(byte[] b) {
        return ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN);
    }

    /** The archive's bytes. */
    public FileSlice slice() {
        return slice;
    }

    /** Entries by name, in directory order. */
    public Map<String, Entry> entries() {
        return entries;
    }

    /** Reads a whole (small) entry, checking its CRC-32. */
    public byte[] readVerified(Entry e) {
        if (e.size() > Integer.MAX_VALUE - 8) {
            throw new TorchFormatException(slice.describe() + ": entry '" + e.name() + "' has " + e.size()
                    + " bytes, too many to read at once");
        }
        byte[] data = slice.read(e.dataOffset(), (int) e.size(), "entry '" + e.name() + "'");
        CRC32 crc = new CRC32();
        crc.update(data);
        if (crc.getValue() != e.crc()) {
            throw new TorchFormatException(slice.describe() + ": entry '" + e.name() + "' has CRC-32 0x"
                    + Long.toHexString(crc.getValue()) + ", the directory records 0x" + Long.toHexString(e.crc())
                    + " (corrupt)");
        }
        return data;
    }
}
