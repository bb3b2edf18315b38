package org.djlmegatron.data;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Megatron's MMIDIDX dataset, {@code PREFIX.idx} + {@code PREFIX.bin}, memory-mapped.
 *
 * <p>The {@code .idx} layout (little-endian): the 9 bytes {@code MMIDIDX\0\0}, version u64 = 1,
 * token dtype code u8 ({@link TokenDType}), sequence count {@code n} u64, document count
 * {@code m} u64, then {@code n} sequence lengths (int32, in tokens), {@code n} sequence
 * pointers (int64, byte offsets into the {@code .bin}), {@code m} document indices (int64: the
 * sequence index where each document ends, with a leading 0, so document {@code d} holds
 * sequences {@code [documentIndex(d), documentIndex(d + 1))}), and for multimodal datasets
 * {@code n} int8 modes (ignored here). The {@code .bin} is the tokens of all sequences back to
 * back. Documents written by {@code preprocess-data} are one sequence each.
 *
 * <p>Opening checks everything that can disagree: header, sizes, document indices, and that the
 * pointers are the running sum of the lengths and end exactly at the end of the {@code .bin}.
 * Reads never copy more than the tokens asked for, and are safe from many threads.
 */
public final class IndexedDataset implements AutoCloseable {

    /** The 9-byte header magic ({@code _INDEX_HEADER} in Megatron-LM). */
    static final byte[] MAGIC = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};

    /** Magic, version, dtype code, sequence count, document count. */
    static final int HEADER_BYTES = 9 + 8 + 1 + 8 + 8;

    private final Path prefix;
    private final MappedBytes idx;
    private final MappedBytes bin;
    private final TokenDType dtype;
    private final long sequenceCount;
    private final long documentCount;
    private final long lengthsAt;
    private final long pointersAt;
    private final long documentsAt;

    private IndexedDataset(Path prefix, MappedBytes idx, MappedBytes bin) {
        this.prefix = prefix;
        this.idx = idx;
        this.bin = bin;
        String name = idx.path().toString();
        if (idx.size() < HEADER_BYTES) {
            throw new InvalidDataException(name + ": " + idx.size() + " bytes is shorter than the "
                    + HEADER_BYTES + "-byte MMIDIDX header");
        }
        for (int i = 0; i < MAGIC.length; i++) {
            if (idx.getByte(i) != MAGIC[i]) {
                throw new InvalidDataException(name + ": not an MMIDIDX index: header magic is "
                        + escape(idx, MAGIC.length) + ", expected MMIDIDX\\x00\\x00");
            }
        }
        long version = idx.getLong(9);
        if (version != 1) {
            throw new InvalidDataException(name + ": index version " + Long.toUnsignedString(version)
                    + " is not supported, expected 1");
        }
        this.dtype = TokenDType.fromCode(idx.getByte(17) & 0xFF, name);
        this.sequenceCount = idx.getLong(18);
        this.documentCount = idx.getLong(26) - 1;
        if (sequenceCount < 0 || documentCount < 0) {
            throw new InvalidDataException(name + ": header counts " + Long.toUnsignedString(sequenceCount)
                    + " sequences and " + Long.toUnsignedString(documentCount + 1)
                    + " document indices are impossible (at least 1 document index, the leading 0)");
        }
        if (sequenceCount > idx.size() / 12 || documentCount >= idx.size() / 8) {
            // checked before the offsets are computed: a damaged count could overflow them into range
            throw new InvalidDataException(name + ": header counts " + sequenceCount + " sequences and "
                    + (documentCount + 1) + " document indices, more than a file of " + idx.size() + " bytes holds");
        }
        this.lengthsAt = HEADER_BYTES;
        this.pointersAt = lengthsAt + 4 * sequenceCount;
        this.documentsAt = pointersAt + 8 * sequenceCount;
        long expected = documentsAt + 8 * (documentCount + 1);
        if (idx.size() != expected && idx.size() != expected + sequenceCount) {
            throw new InvalidDataException(name + ": file is " + idx.size() + " bytes but its header ("
                    + sequenceCount + " sequences, " + (documentCount + 1) + " document indices) needs "
                    + expected + " (or " + (expected + sequenceCount) + " with multimodal modes)");
        }
        checkDocuments(name);
        checkPointers(name);
    }

    /**
     * Opens {@code prefix.idx} and {@code prefix.bin} (the prefix has no extension, as in
     * Megatron's {@code --data-path}).
     *
     * @throws InvalidDataException if either file is missing or the two disagree
     */
    public static IndexedDataset open(Path prefix) {
        Path idxPath = idxPath(prefix);
        Path binPath = binPath(prefix);
        for (Path p : new Path[] {idxPath, binPath}) {
            if (!Files.isRegularFile(p)) {
                throw new InvalidDataException(p + ": no such file (dataset prefix " + prefix + ")");
            }
        }
        try {
            return new IndexedDataset(prefix, MappedBytes.map(idxPath), MappedBytes.map(binPath));
        } catch (IOException e) {
            throw new InvalidDataException(prefix + ": cannot map dataset: " + e.getMessage(), e);
        }
    }

    /** {@code prefix.idx}. */
    public static Path idxPath(Path prefix) {
        return prefix.resolveSibling(prefix.getFileName() + ".idx");
    }

    /** {@code prefix.bin}. */
    public static Path binPath(Path prefix) {
        return prefix.resolveSibling(prefix.getFileName() + ".bin");
    }

    public Path prefix() {
        return prefix;
    }

    public TokenDType dtype() {
        return dtype;
    }

    /** Sequences (Megatron's {@code len(dataset)}, the unit that GPT splits and samples count). */
    public long sequenceCount() {
        return sequenceCount;
    }

    /** Documents ({@code len(document_indices) - 1}). */
    public long documentCount() {
        return documentCount;
    }

    /** Tokens in all sequences. */
    public long tokenCount() {
        return bin.size() / dtype.size();
    }

    /** Length in tokens of sequence {@code i}. */
    public int sequenceLength(long i) {
        return idx.getInt(lengthsAt + 4 * checkSequence(i));
    }

    /** Byte offset of sequence {@code i} in the {@code .bin}. */
    public long sequencePointer(long i) {
        return idx.getLong(pointersAt + 8 * checkSequence(i));
    }

    /** The first sequence of document {@code d}; {@code d == documentCount()} gives the end. */
    public long documentIndex(long d) {
        if (d < 0 || d > documentCount) {
            throw new IndexOutOfBoundsException("document index " + d + " outside [0, " + documentCount + "]");
        }
        return idx.getLong(documentsAt + 8 * d);
    }

    /** All tokens of sequence {@code i}. */
    public long[] get(long i) {
        return get(i, 0, sequenceLength(i));
    }

    /** {@code length} tokens of sequence {@code i} from token {@code offset} (Megatron's {@code get}). */
    public long[] get(long i, int offset, int length) {
        long[] out = new long[length];
        read(i, offset, out, 0, length);
        return out;
    }

    /** Copies {@code length} tokens of sequence {@code i} from token {@code offset} into {@code dst}. */
    public void read(long i, int offset, long[] dst, int dstPos, int length) {
        int n = sequenceLength(i);
        if (offset < 0 || length < 0 || offset > n - length) {
            throw new IndexOutOfBoundsException("tokens [" + offset + ", " + ((long) offset + length)
                    + ") outside sequence " + i + " of length " + n);
        }
        bin.readTokens(sequencePointer(i) + (long) offset * dtype.size(), dtype, dst, dstPos, length);
    }

    @Override
    public void close() {
        idx.close();
        bin.close();
    }

    @Override
    public String toString() {
        return prefix + " (" + sequenceCount + " sequences, " + documentCount + " documents, "
                + tokenCount() + " " + dtype.name().toLowerCase() + " tokens)";
    }

    private long checkSequence(long i) {
        if (i < 0 || i >= sequenceCount) {
            throw new IndexOutOfBoundsException("sequence " + i + " outside [0, " + sequenceCount + ")");
        }
        return i;
    }

    private void checkDocuments(String name) {
        long previous = idx.getLong(documentsAt);
        if (previous != 0) {
            throw new InvalidDataException(name + ": document indices must start with 0, found " + previous);
        }
        for (long d = 1; d <= documentCount; d++) {
            long v = idx.getLong(documentsAt + 8 * d);
            if (v < previous || v > sequenceCount) {
                throw new InvalidDataException(name + ": document index " + d + " is " + v
                        + ", expected a value in [" + previous + ", " + sequenceCount + "]");
            }
            previous = v;
        }
        if (previous != sequenceCount) {
            throw new InvalidDataException(name + ": the last document ends at sequence " + previous
                    + ", expected " + sequenceCount + " (the sequence count)");
        }
    }

    private void checkPointers(String name) {
        long expectedPointer = 0;
        for (long i = 0; i < sequenceCount; i++) {
            int length = idx.getInt(lengthsAt + 4 * i);
            long pointer = idx.getLong(pointersAt + 8 * i);
            if (length < 0) {
                throw new InvalidDataException(name + ": sequence " + i + " has negative length " + length);
            }
            if (pointer != expectedPointer) {
                throw new InvalidDataException(name + ": sequence " + i + " starts at byte " + pointer
                        + " of the .bin, expected " + expectedPointer + " (the lengths before it)");
            }
            expectedPointer += (long) length * dtype.size();
        }
        if (bin.size() != expectedPointer) {
            throw new InvalidDataException(bin.path() + ": file is " + bin.size() + " bytes but " + name
                    + " describes " + expectedPointer / dtype.size() + " " + dtype.name().toLowerCase()
                    + " tokens = " + expectedPointer + " bytes");
        }
    }

    private static String escape(MappedBytes file, int n) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < n; i++) {
            int b = file.getByte(i) & 0xFF;
            sb.append(b >= 0x20 && b < 0x7F ? String.valueOf((char) b) : String.format("\\x%02x", b));
        }
        return sb.toString();
    }
}
