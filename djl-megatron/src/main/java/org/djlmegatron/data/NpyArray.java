package org.djlmegatron.data;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.concurrent.ThreadLocalRandom;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * 32-bit integer arrays in numpy's {@code .npy} format (version 1.0, C order, little-endian),
 * written with the same header bytes as {@code numpy.save}, so numpy loads the index caches and
 * an array equal to Megatron's is a file equal to Megatron's.
 *
 * @param descr {@code <i4} or {@code <u4} (values of a {@code <u4} array are below 2^31 here)
 * @param shape one or two dimensions
 * @param data the elements in C order
 */
record NpyArray(String descr, long[] shape, int[] data) {

    private static final byte[] MAGIC = {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    private static final int ALIGN = 64;
    /** numpy leaves room for the first axis to grow to 21 digits in place. */
    private static final int GROWTH_AXIS_MAX_DIGITS = 21;
    private static final Pattern HEADER = Pattern.compile(
            "\\{'descr': '(<[iu]4)', 'fortran_order': False, 'shape': \\((\\d+),(?: (\\d+))?\\), \\}\\s*");

    /** Writes atomically: a hidden sibling renamed over {@code file}. */
    void write(Path file) throws IOException {
        String dims = shape.length == 1 ? shape[0] + "," : shape[0] + ", " + shape[1];
        StringBuilder header = new StringBuilder("{'descr': '" + descr + "', 'fortran_order': False, 'shape': ("
                + dims + "), }");
        header.append(" ".repeat(GROWTH_AXIS_MAX_DIGITS - Long.toString(shape[0]).length()));
        int hlen = header.length() + 1;
        int pad = ALIGN - ((MAGIC.length + 2 + hlen) % ALIGN);
        header.append(" ".repeat(pad)).append('\n');
        byte[] h = header.toString().getBytes(StandardCharsets.US_ASCII);
        ByteBuffer buf = ByteBuffer.allocate(MAGIC.length + 2 + h.length + 4 * data.length).order(ByteOrder.LITTLE_ENDIAN);
        buf.put(MAGIC).putShort((short) h.length).put(h);
        buf.asIntBuffer().put(data);
        buf.position(buf.capacity()).flip();
        Path tmp = file.resolveSibling("." + file.getFileName() + "."
                + Long.toUnsignedString(ThreadLocalRandom.current().nextLong(), 36) + ".tmp");
        try {
            try (FileChannel out = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                while (buf.hasRemaining()) {
                    out.write(buf);
                }
                out.force(true);
            }
            Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    /**
     * Reads a file that {@link #write} (or {@code numpy.save} of such an array) produced.
     *
     * @throws InvalidDataException if it is not a version 1.0 int32/uint32 C-order array or its
     *     size disagrees with its header
     */
    static NpyArray read(Path file) throws IOException {
        byte[] bytes = Files.readAllBytes(file);
        ByteBuffer buf = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < MAGIC.length; i++) {
            if (bytes.length <= i || bytes[i] != MAGIC[i]) {
                throw new InvalidDataException(file + ": not a version 1.0 .npy file");
            }
        }
        int hlen = Short.toUnsignedInt(buf.getShort(MAGIC.length));
        int dataAt = MAGIC.length + 2 + hlen;
        String header = dataAt <= bytes.length
                ? new String(bytes, MAGIC.length + 2, hlen, StandardCharsets.US_ASCII) : "";
        Matcher m = HEADER.matcher(header);
        if (!m.matches()) {
            throw new InvalidDataException(file + ": unsupported .npy header " + header.strip()
                    + "; expected a C-order <i4 or <u4 array of 1 or 2 dimensions");
        }
        long[] shape = m.group(3) == null ? new long[] {Long.parseLong(m.group(2))}
                : new long[] {Long.parseLong(m.group(2)), Long.parseLong(m.group(3))};
        long count = shape.length == 1 ? shape[0] : shape[0] * shape[1];
        if (bytes.length - dataAt != 4 * count) {
            throw new InvalidDataException(file + ": " + (bytes.length - dataAt) + " data bytes, but the header's shape needs "
                    + 4 * count);
        }
        int[] data = new int[(int) count];
        buf.position(dataAt).slice().order(ByteOrder.LITTLE_ENDIAN).asIntBuffer().get(data);
        return new NpyArray(m.group(1), shape, data);
    }
}
