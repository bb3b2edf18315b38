package org.djlmegatron.cli;

import java.nio.file.Path;
import org.djlmegatron.data.TextTokenizer;
import picocli.CommandLine.Option;

/**
 * The tokenizer files shared by the data commands ({@code preprocess-data}, {@code inspect-data},
 * {@code bench-data}), a picocli mixin; each command declares {@code --tokenizer-type} itself
 * (required or not).
 */
final class TokenizerFiles {

    @Option(names = "--tokenizer-model", description = "HuggingFaceTokenizer: tokenizer.json, or a directory holding it "
            + "(and tokenizer_config.json) (default: none)")
    Path tokenizerModel;

    @Option(names = "--vocab-file", description = "GPT2BPETokenizer: GPT-2's vocab.json (token to id) (default: none)")
    Path vocabFile;

    @Option(names = "--merge-file", description = "GPT2BPETokenizer: GPT-2's merges.txt (default: none)")
    Path mergeFile;

    /** The tokenizer of {@code type} from these files. */
    TextTokenizer create(String type) {
        return TextTokenizer.create(type, tokenizerModel, vocabFile, mergeFile);
    }
}
