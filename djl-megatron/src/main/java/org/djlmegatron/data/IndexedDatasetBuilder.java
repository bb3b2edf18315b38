package org.djlmegatron.data;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;

/**
 * Writes an MMIDIDX dataset ({@link IndexedDataset}) byte for byte as Megatron-LM's
 * {@code IndexedDatasetBuilder} does, in constant memory, and publishes it atomically.
 *
 * <p>Tokens stream to a hidden temporary {@code .bin} beside the target; the sequence lengths and
 * document indices stream to two hidden spill files, so memory does not grow with the dataset
 * (Megatron keeps them in Python lists). {@link #finish()} assembles the {@code .idx} from the
 * spills (pointers are the running sum of the lengths), syncs both files, then publishes in this
 * order: delete an old {@code .idx}, rename the {@code .bin} into place, rename the {@code .idx}
 * into place. A reader that finds the {@code .idx} therefore always finds its own {@code .bin}.
 * {@link #close()} without {@code finish()} deletes every temporary file; nothing is left under
 * the prefix. One builder is used from one thread.
 */
public final class IndexedDatasetBuilder implements AutoCloseable {

    private static final int BIN_BUFFER = 1 << 20;
    private static final int SPILL_BUFFER = 1 << 16;

    private final Path prefix;
    private final TokenDType dtype;
    private final Path binTmp;
    private final Path idxTmp;
    private final List<Path> temporaries = new ArrayList<>();
    private final FileChannel bin;
    private final FileChannel lengths;
    private final FileChannel documents;
    private final ByteBuffer binBuf = ByteBuffer.allocateDirect(BIN_BUFFER).order(ByteOrder.LITTLE_ENDIAN);
    private final ByteBuffer lengthsBuf = ByteBuffer.allocateDirect(SPILL_BUFFER).order(ByteOrder.LITTLE_ENDIAN);
    private final ByteBuffer documentsBuf = ByteBuffer.allocateDirect(SPILL_BUFFER).order(ByteOrder.LITTLE_ENDIAN);
    private long sequenceCount;
    private long documentCount;
    private long tokenCount;
    private boolean done;

    private IndexedDatasetBuilder(Path prefix, TokenDType dtype) throws IOException {
        this.prefix = prefix.toAbsolutePath();
        this.dtype = dtype;
        Path dir = this.prefix.getParent();
        Files.createDirectories(dir);
        String tag = "." + this.prefix.getFileName() + "." + Long.toUnsignedString(ThreadLocalRandom.current().nextLong(), 36);
        binTmp = dir.resolve(tag + ".bin.tmp");
        idxTmp = dir.resolve(tag + ".idx.tmp");
        try {
            bin = create(binTmp);
            lengths = create(dir.resolve(tag + ".lengths.tmp"));
            documents = create(dir.resolve(tag + ".documents.tmp"));
        } catch (IOException | RuntimeException e) {
            close();
            throw e;
        }
    }

    /**
     * Starts a dataset that {@link #finish()} will publish as {@code prefix.bin} and
     * {@code prefix.idx}; the parent directory is created if needed.
     */
    public static IndexedDatasetBuilder create(Path prefix, TokenDType dtype) throws IOException {
        return new IndexedDatasetBuilder(prefix, dtype);
    }

    public TokenDType dtype() {
        return dtype;
    }

    public long sequenceCount() {
        return sequenceCount;
    }

    public long documentCount() {
        return documentCount;
    }

    public long tokenCount() {
        return tokenCount;
    }

    /** Adds a document of one sequence (what {@code preprocess-data} writes). */
    public void addDocument(int[] tokens) {
        addDocument(tokens, tokens.length == 0 ? new int[0] : new int[] {tokens.length});
    }

    /**
     * Adds a document made of consecutive sequences: {@code tokens} is their concatenation and
     * {@code sequenceLengths} their sizes (Megatron's {@code add_document(tensor, lengths)}). A document
     * with no sequences is legal and only adds a document index.
     *
     * @throws InvalidDataException if the lengths do not sum to the token count or a token does
     *     not fit the dtype (a vocabulary larger than the dtype allows)
     */
    public void addDocument(int[] tokens, int[] sequenceLengths) {
        long sum = 0;
        for (int length : sequenceLengths) {
            if (length < 0) {
                throw new IllegalArgumentException("negative sequence length " + length);
            }
            sum += length;
        }
        if (sum != tokens.length) {
            throw new IllegalArgumentException("sequence lengths sum to " + sum + " but the document has "
                    + tokens.length + " tokens");
        }
        try {
            putTokens(tokens);
            for (int length : sequenceLengths) {
                putLength(length);
            }
            sequenceCount += sequenceLengths.length;
            tokenCount += tokens.length;
            endDocument();
        } catch (IOException e) {
            throw new UncheckedIOException(binTmp + ": write failed", e);
        }
    }

    /**
     * Appends every document of {@code other} (Megatron's {@code add_index}, used to merge
     * datasets): its lengths and shifted document indices, and its {@code .bin} bytes copied as
     * they are.
     *
     * @throws InvalidDataException if the dtypes differ
     */
    public void addIndex(IndexedDataset other) {
        if (other.dtype() != dtype) {
            throw new InvalidDataException(other.prefix() + ": dtype " + other.dtype().name().toLowerCase()
                    + " cannot be merged into a " + dtype.name().toLowerCase() + " dataset");
        }
        try {
            drain(binBuf, bin);
            try (FileChannel in = FileChannel.open(IndexedDataset.binPath(other.prefix()), StandardOpenOption.READ)) {
                transfer(in, bin);
            }
            for (long i = 0; i < other.sequenceCount(); i++) {
                putLength(other.sequenceLength(i));
            }
            long base = sequenceCount;
            for (long d = 1; d <= other.documentCount(); d++) {
                putDocumentIndex(base + other.documentIndex(d));
            }
            sequenceCount += other.sequenceCount();
            tokenCount += other.tokenCount();
        } catch (IOException e) {
            throw new UncheckedIOException(other.prefix() + ": merge failed", e);
        }
    }

    /** Writes the {@code .idx}, syncs, and publishes both files atomically (see the class comment). */
    public void finish() {
        if (done) {
            throw new IllegalStateException(prefix + ": already finished");
        }
        try {
            drain(binBuf, bin);
            drain(lengthsBuf, lengths);
            drain(documentsBuf, documents);
            writeIndex();
            bin.force(true);
            bin.close();
            Path idxTarget = IndexedDataset.idxPath(prefix);
            Files.deleteIfExists(idxTarget);
            Files.move(binTmp, IndexedDataset.binPath(prefix), StandardCopyOption.ATOMIC_MOVE,
                    StandardCopyOption.REPLACE_EXISTING);
            Files.move(idxTmp, idxTarget, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            done = true;
        } catch (IOException e) {
            throw new UncheckedIOException(prefix + ": cannot publish dataset", e);
        } finally {
            close();
        }
    }

    /** Deletes every temporary file; after {@link #finish()} only the spills remained. */
    @Override
    public void close() {
        for (FileChannel c : new FileChannel[] {bin, lengths, documents}) {
            if (c != null) {
                try {
                    c.close();
                } catch (IOException ignored) {
                    // the file is deleted next; nothing of it is kept
                }
            }
        }
        for (Path p : temporaries) {
            try {
                Files.deleteIfExists(p);
            } catch (IOException ignored) {
                // best effort: a leftover hidden .tmp is harmless and named for its dataset
            }
        }
    }

    private void endDocument() throws IOException {
        putDocumentIndex(sequenceCount);
    }

    private void putLength(int length) throws IOException {
        if (lengthsBuf.remaining() < 4) {
            drain(lengthsBuf, lengths);
        }
        lengthsBuf.putInt(length);
    }

    private void putDocumentIndex(long value) throws IOException {
        if (documentsBuf.remaining() < 8) {
            drain(documentsBuf, documents);
        }
        documentsBuf.putLong(value);
        documentCount++;
    }

    /** Tokens in chunks that fit the buffer, one tight loop per dtype (this runs once per token). */
    private void putTokens(int[] tokens) throws IOException {
        int size = dtype.size();
        for (int i = 0; i < tokens.length; ) {
            if (binBuf.remaining() < size) {
                drain(binBuf, bin);
            }
            int end = Math.min(tokens.length, i + binBuf.remaining() / size);
            for (int k = i; k < end; k++) {
                if (!dtype.holds(tokens[k])) {
                    throw new InvalidDataException("token " + tokens[k] + " does not fit the dataset dtype "
                            + dtype.name().toLowerCase() + " (document " + documentCount + ")");
                }
            }
            switch (dtype) {
                case UINT8, INT8 -> { for (int k = i; k < end; k++) binBuf.put((byte) tokens[k]); }
                case UINT16, INT16 -> { for (int k = i; k < end; k++) binBuf.putShort((short) tokens[k]); }
                case INT32 -> { for (int k = i; k < end; k++) binBuf.putInt(tokens[k]); }
                case INT64 -> { for (int k = i; k < end; k++) binBuf.putLong(tokens[k]); }
            }
            i = end;
        }
    }

    /** Header, lengths (copied from the spill), pointers (summed from the spill), document indices. */
    private void writeIndex() throws IOException {
        try (FileChannel out = create(idxTmp)) {
            ByteBuffer buf = ByteBuffer.allocateDirect(BIN_BUFFER).order(ByteOrder.LITTLE_ENDIAN);
            buf.put(IndexedDataset.MAGIC).putLong(1).put((byte) dtype.code())
                    .putLong(sequenceCount).putLong(documentCount + 1);
            drain(buf, out);
            transfer(lengths, out);
            ByteBuffer in = ByteBuffer.allocateDirect(SPILL_BUFFER).order(ByteOrder.LITTLE_ENDIAN);
            long pointer = 0;
            for (long pos = 0; pos < lengths.size(); ) {
                pos += lengths.read(in, pos);
                in.flip();
                while (in.remaining() >= 4) {
                    if (buf.remaining() < 8) {
                        drain(buf, out);
                    }
                    buf.putLong(pointer);
                    pointer += (long) in.getInt() * dtype.size();
                }
                in.compact();
            }
            if (buf.remaining() < 8) {
                drain(buf, out);
            }
            buf.putLong(0); // the leading document index
            drain(buf, out);
            transfer(documents, out);
            out.force(true);
        }
    }

    private static void transfer(FileChannel from, FileChannel to) throws IOException {
        long size = from.size();
        for (long pos = 0; pos < size; ) {
            pos += from.transferTo(pos, size - pos, to);
        }
    }

    private FileChannel create(Path p) throws IOException {
        temporaries.add(p);
        return FileChannel.open(p, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE, StandardOpenOption.READ);
    }

    private static void drain(ByteBuffer buf, FileChannel channel) throws IOException {
        buf.flip();
        while (buf.hasRemaining()) {
            channel.write(buf);
        }
        buf.clear();
    }
}
