package org.djlmegatron.data;

import java.nio.file.Path;
import java.util.List;

/**
 * What {@link Preprocessor} does, named after Megatron's {@code tools/preprocess_data.py} flags.
 *
 * @param input {@code --input}: JSON lines, plain or gzip
 * @param jsonKeys {@code --json-keys}: the fields to tokenize, one dataset each
 * @param outputPrefix {@code --output-prefix}: datasets go to {@code <prefix>_<key>_document.bin/.idx}
 * @param appendEod {@code --append-eod}: end every non-empty document with the EOD token
 * @param workers {@code --workers}: tokenizing threads
 * @param skipBadLines count and report bad lines instead of stopping at the first one
 * @param overwrite replace existing datasets under the prefix (refused otherwise, as {@code convert} does)
 */
public record PreprocessConfig(Path input, List<String> jsonKeys, Path outputPrefix, boolean appendEod,
        int workers, boolean skipBadLines, boolean overwrite) {

    /** A configuration that refuses to replace existing datasets. */
    public PreprocessConfig(Path input, List<String> jsonKeys, Path outputPrefix, boolean appendEod,
            int workers, boolean skipBadLines) {
        this(input, jsonKeys, outputPrefix, appendEod, workers, skipBadLines, false);
    }

    public PreprocessConfig {
        jsonKeys = List.copyOf(jsonKeys);
        if (jsonKeys.isEmpty()) {
            throw new IllegalArgumentException("--json-keys needs at least one key");
        }
        if (jsonKeys.stream().distinct().count() != jsonKeys.size()) {
            throw new IllegalArgumentException("--json-keys lists a key twice: " + jsonKeys);
        }
        if (workers < 1) {
            throw new IllegalArgumentException("--workers must be at least 1, found " + workers);
        }
    }

    /** {@code <outputPrefix>_<key>_document}, the dataset prefix Megatron names for {@code key}. */
    public Path datasetPrefix(String key) {
        return outputPrefix.resolveSibling(outputPrefix.getFileName() + "_" + key + "_document");
    }
}
