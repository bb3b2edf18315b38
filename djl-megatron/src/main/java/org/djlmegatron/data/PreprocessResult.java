package org.djlmegatron.data;

import java.nio.file.Path;
import java.util.List;

/**
 * What a {@link Preprocessor} run wrote and read.
 *
 * @param datasets the published dataset prefixes, one per JSON key
 * @param dtype the token type of every dataset
 * @param lines input lines read
 * @param documents documents written per dataset (one per good line)
 * @param tokens tokens written over all datasets
 * @param inputBytes bytes of the input file
 * @param textBytes bytes of the (decompressed) input lines
 * @param blankLines whitespace-only lines, skipped
 * @param badLines lines refused and skipped under {@code skipBadLines}
 * @param badLineReasons the first few of those reasons, each naming its line
 * @param seconds wall time from opening the input to publishing the last dataset
 */
public record PreprocessResult(List<Path> datasets, TokenDType dtype, long lines, long documents, long tokens,
        long inputBytes, long textBytes, long blankLines, long badLines, List<String> badLineReasons,
        double seconds) {

    public PreprocessResult {
        datasets = List.copyOf(datasets);
        badLineReasons = List.copyOf(badLineReasons);
    }
}
