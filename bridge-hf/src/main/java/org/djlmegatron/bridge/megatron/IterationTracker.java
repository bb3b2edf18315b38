package org.djlmegatron.bridge.megatron;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.djlmegatron.bridge.convert.CheckpointException;

/**
 * Megatron's checkpoint directory convention: {@code latest_checkpointed_iteration.txt} at the
 * root names the iteration (or {@code release}), whose files live in {@code iter_XXXXXXX/} (or
 * {@code release/}). Megatron refuses iteration 0 unless it is a release, so a checkpoint without
 * an iteration (converted from Hugging Face) is written as {@code release}.
 */
public final class IterationTracker {

    public static final String TRACKER = "latest_checkpointed_iteration.txt";
    public static final String RELEASE = "release";
    private static final Pattern ITER = Pattern.compile("iter_(\\d{7,})");

    private IterationTracker() {}

    /** {@code iter_0000042} for 42, {@code release} for 0. */
    public static String dirName(long iteration) {
        return iteration > 0 ? String.format("iter_%07d", iteration) : RELEASE;
    }

    /** Whether {@code dir} is a checkpoint root (has a tracker) or an iteration directory. */
    public static boolean isCheckpoint(Path dir) {
        return Files.isRegularFile(dir.resolve(TRACKER)) || isIterationDir(dir);
    }

    private static boolean isIterationDir(Path dir) {
        String name = dir.getFileName() == null ? "" : dir.getFileName().toString();
        return Files.isDirectory(dir) && (ITER.matcher(name).matches() || name.equals(RELEASE));
    }

    /**
     * The iteration directory of a checkpoint root (through its tracker) or {@code path} itself
     * when it already is one.
     */
    public static Path iterationDir(Path path) {
        if (isIterationDir(path) && !Files.isRegularFile(path.resolve(TRACKER))) {
            return path;
        }
        Path tracker = path.resolve(TRACKER);
        String text;
        try {
            text = Files.readString(tracker, StandardCharsets.UTF_8).strip();
        } catch (IOException e) {
            throw new CheckpointException(path + ": no readable " + TRACKER + " and not an iter_XXXXXXX or release "
                    + "directory (" + e + ")", e);
        }
        String dir;
        if (text.equals(RELEASE)) {
            dir = RELEASE;
        } else {
            try {
                dir = dirName(Long.parseLong(text));
            } catch (NumberFormatException e) {
                throw new CheckpointException(tracker + ": expected an iteration number or 'release', found '"
                        + text + "'");
            }
        }
        Path iter = path.resolve(dir);
        if (!Files.isDirectory(iter)) {
            throw new CheckpointException(tracker + " names iteration '" + text + "' but " + iter + " does not exist");
        }
        return iter;
    }

    /** The iteration of an iteration directory's name; 0 for {@code release}. */
    public static long iterationOf(Path iterationDir) {
        Matcher m = ITER.matcher(iterationDir.getFileName().toString());
        return m.matches() ? Long.parseLong(m.group(1)) : 0;
    }

    /** Writes the tracker (call last: it is what makes the checkpoint visible to Megatron). */
    public static void writeTracker(Path root, long iteration) {
        try {
            Files.writeString(root.resolve(TRACKER), iteration > 0 ? Long.toString(iteration) : RELEASE,
                    StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new CheckpointException(root.resolve(TRACKER) + ": write failed: " + e, e);
        }
    }

    /** Creates the iteration directory under a new checkpoint root. */
    public static Path createIterationDir(Path root, long iteration) {
        Path dir = root.resolve(dirName(iteration));
        try {
            return Files.createDirectories(dir);
        } catch (IOException e) {
            throw new CheckpointException(dir + ": cannot create: " + e, e);
        }
    }
}
