package org.djlmegatron.io;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The opened files of one checkpoint with their validated headers: what {@link
 * SafetensorsReader#open} resolves a path to.
 *
 * @param source the file or index the checkpoint was opened on
 * @param tensors every visible tensor
 * @param files the open shard files (one for a single-file checkpoint)
 * @param metadata merged metadata, see {@link SafetensorsReader#metadata()}
 */
record CheckpointFiles(
        Path source, Map<String, TensorInfo> tensors, Map<Path, MappedFile> files, Map<String, String> metadata) {

    static final String MODEL_FILE = "model.safetensors";

    static CheckpointFiles open(Path path, long windowSize) {
        try {
            if (Files.isDirectory(path)) {
                Path single = path.resolve(MODEL_FILE);
                Path index = path.resolve(ShardIndex.INDEX_NAME);
                if (Files.isRegularFile(single)) {
                    return openSingle(single, windowSize);
                }
                if (Files.isRegularFile(index)) {
                    return openSharded(index, windowSize);
                }
                throw new SafetensorsException(path + ": directory holds neither " + MODEL_FILE + " nor "
                        + ShardIndex.INDEX_NAME);
            }
            if (!Files.exists(path)) {
                throw new SafetensorsException(path + ": no such file or directory",
                        new NoSuchFileException(path.toString()));
            }
            String name = path.getFileName().toString();
            return name.endsWith(".index.json") ? openSharded(path, windowSize) : openSingle(path, windowSize);
        } catch (IOException e) {
            throw new SafetensorsException(path + ": cannot read checkpoint: " + e, e);
        }
    }

    private static CheckpointFiles openSingle(Path file, long windowSize) throws IOException {
        MappedFile mapped = MappedFile.open(file, windowSize);
        try {
            SafetensorsHeader header = SafetensorsHeader.read(file, mapped.channel());
            return new CheckpointFiles(file, header.tensors(), Map.of(file, mapped), header.metadata());
        } catch (IOException | RuntimeException e) {
            mapped.close();
            throw e;
        }
    }

    private static CheckpointFiles openSharded(Path indexFile, long windowSize) throws IOException {
        ShardIndex index = ShardIndex.read(indexFile);
        Map<Path, MappedFile> files = new LinkedHashMap<>();
        try {
            Map<Path, SafetensorsHeader> headers = new LinkedHashMap<>();
            Map<String, String> metadata = new LinkedHashMap<>();
            Map<String, TensorInfo> tensors = new LinkedHashMap<>();
            for (Map.Entry<String, Path> e : index.weightMap().entrySet()) {
                Path shard = e.getValue();
                SafetensorsHeader header = headers.get(shard);
                if (header == null) {
                    if (!Files.isRegularFile(shard)) {
                        throw new SafetensorsException(indexFile + ": field 'weight_map' tensor '" + e.getKey()
                                + "': shard file " + shard + " does not exist");
                    }
                    MappedFile mapped = MappedFile.open(shard, windowSize);
                    files.put(shard, mapped);
                    header = SafetensorsHeader.read(shard, mapped.channel());
                    headers.put(shard, header);
                    metadata.putAll(header.metadata());
                }
                TensorInfo info = header.tensors().get(e.getKey());
                if (info == null) {
                    throw new SafetensorsException(indexFile + ": field 'weight_map' tensor '" + e.getKey()
                            + "': expected in shard " + shard + ", but that file has no such tensor");
                }
                tensors.put(e.getKey(), info);
            }
            metadata.putAll(index.metadata());
            return new CheckpointFiles(indexFile, tensors, files, metadata);
        } catch (IOException | RuntimeException e) {
            for (MappedFile f : files.values()) {
                try {
                    f.close();
                } catch (IOException suppressed) {
                    e.addSuppressed(suppressed);
                }
            }
            throw e;
        }
    }
}
