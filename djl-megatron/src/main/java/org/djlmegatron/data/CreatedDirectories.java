package org.djlmegatron.data;

import java.io.IOException;
import java.nio.file.DirectoryNotEmptyException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * The directories a write is about to create (the missing ancestors of its target directory),
 * so that a failed write can remove them again and leave the file system as it found it.
 */
final class CreatedDirectories {

    private final List<Path> missing;

    private CreatedDirectories(List<Path> missing) {
        this.missing = missing;
    }

    /** Notes which of {@code dir} and its ancestors do not exist yet (deepest first). */
    static CreatedDirectories before(Path dir) {
        List<Path> missing = new ArrayList<>();
        for (Path d = dir; d != null && !Files.exists(d); d = d.getParent()) {
            missing.add(d);
        }
        return new CreatedDirectories(missing);
    }

    /** Removes the noted directories that exist now and are empty, deepest first; keeps anything else. */
    void removeIfEmpty() {
        for (Path d : missing) {
            try {
                Files.deleteIfExists(d);
            } catch (DirectoryNotEmptyException e) {
                return; // someone else's files: keep it and its parents
            } catch (IOException e) {
                return;
            }
        }
    }
}
