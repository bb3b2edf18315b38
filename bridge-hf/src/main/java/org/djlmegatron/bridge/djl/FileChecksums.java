package org.djlmegatron.bridge.djl;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.zip.CRC32C;
import org.djlmegatron.bridge.convert.CheckpointException;

/**
 * Per-file checksums of a djl-megatron checkpoint iteration, recorded in {@code metadata.json} as
 * {@code "checksums": {"mp_rank_00/model.safetensors": "crc32c:1a2b3c4d", ...}} (paths relative
 * to the iteration directory). CRC32C: hardware-accelerated in the JDK (several GB/s), and it
 * detects any burst of damaged bytes shorter than 32 bits and almost every other corruption.
 */
public final class FileChecksums {

    static final String ALGORITHM = "crc32c";
    private static final int BUFFER = 1 << 20;

    private FileChecksums() {}

    /** The checksums of {@code files}, relative to {@code dir}. */
    public static Map<String, String> of(Path dir, Collection<String> files) {
        Map<String, String> out = new LinkedHashMap<>();
        for (String f : files) {
            out.put(f, of(dir.resolve(f)));
        }
        return out;
    }

    /** {@code crc32c:xxxxxxxx} of one file. */
    public static String of(Path file) {
        CRC32C crc = new CRC32C();
        byte[] buf = new byte[BUFFER];
        try (InputStream in = Files.newInputStream(file)) {
            int n;
            while ((n = in.read(buf)) > 0) {
                crc.update(buf, 0, n);
            }
        } catch (IOException e) {
            throw new CheckpointException(file + ": cannot read: " + e, e);
        }
        return ALGORITHM + ":" + String.format(Locale.ROOT, "%08x", crc.getValue());
    }

    /**
     * Checks {@code file} (relative to {@code dir}) against its recorded checksum; a file the
     * record does not list (a checkpoint written before checksums) passes.
     *
     * @throws ChecksumMismatchException naming the file, the recorded and the found checksum
     */
    public static void verify(Path dir, String file, Map<String, String> recorded) {
        String expected = recorded.get(file);
        if (expected == null) {
            return;
        }
        if (!expected.startsWith(ALGORITHM + ":")) {
            throw new CheckpointException(dir.resolve(DjlMetadata.FILE) + ": checksum of " + file + " is '" + expected
                    + "', expected " + ALGORITHM + ":<8 hex digits>");
        }
        String found = of(dir.resolve(file));
        if (!found.equals(expected)) {
            throw new ChecksumMismatchException(dir.resolve(file) + ": checksum " + found + ", " + DjlMetadata.FILE
                    + " records " + expected + ": the file is damaged; pass --no-verify to read it anyway");
        }
    }
}
