package org.djlmegatron.examples;

import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.djlmegatron.bridge.CheckpointConverter;

/**
 * Where an example program writes: the {@code --work-dir} given (kept, and named at the start),
 * or a temporary folder that is named at the start and removed at the end, so runs leave nothing
 * behind in {@code /tmp}.
 */
final class WorkDir implements AutoCloseable {

    private final Path path;
    private final boolean temporary;
    private final PrintStream out;

    private WorkDir(Path path, boolean temporary, PrintStream out) {
        this.path = path;
        this.temporary = temporary;
        this.out = out;
    }

    static WorkDir of(Path given, String name, PrintStream out) throws IOException {
        if (given != null) {
            Files.createDirectories(given);
            out.println("writing to " + given);
            return new WorkDir(given, false, out);
        }
        Path tmp = Files.createTempDirectory(name);
        out.println("writing to the temporary folder " + tmp + " (removed at the end; --work-dir DIR keeps the files)");
        return new WorkDir(tmp, true, out);
    }

    Path path() {
        return path;
    }

    @Override
    public void close() {
        if (!temporary) {
            return;
        }
        try {
            CheckpointConverter.deleteTree(path);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot remove the temporary folder " + path, e);
        }
        out.println("removed " + path);
    }
}
