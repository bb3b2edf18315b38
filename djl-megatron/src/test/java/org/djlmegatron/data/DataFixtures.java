package org.djlmegatron.data;

import java.io.IOException;
import java.nio.file.Path;

/** Paths of the shared reference fixtures, and small datasets written for a test. */
final class DataFixtures {

    private DataFixtures() {}

    static Path shared(String relative) {
        return Path.of(System.getProperty("djlm.repo.root", ".")).resolve("../shared/fixtures").resolve(relative)
                .toAbsolutePath().normalize();
    }

    /** Megatron's own output for corpus.jsonl (prefix, without .bin/.idx). */
    static Path megatronCorpusPrefix() {
        return shared("megatron_preprocess/corpus_text_document");
    }

    static Path corpusJsonl() {
        return shared("megatron_preprocess/corpus.jsonl");
    }

    static Path llama2() {
        return shared("tokenizers/llama2");
    }

    /**
     * A dataset of one-sequence documents of the given lengths whose tokens name their place:
     * token {@code j} of document {@code d} is {@code 100 * d + j}.
     */
    static Path writeDocuments(Path prefix, int... lengths) throws IOException {
        try (IndexedDatasetBuilder b = IndexedDatasetBuilder.create(prefix, TokenDType.UINT16)) {
            for (int d = 0; d < lengths.length; d++) {
                int[] tokens = new int[lengths[d]];
                for (int j = 0; j < tokens.length; j++) {
                    tokens[j] = 100 * d + j;
                }
                b.addDocument(tokens);
            }
            b.finish();
        }
        return prefix;
    }
}
