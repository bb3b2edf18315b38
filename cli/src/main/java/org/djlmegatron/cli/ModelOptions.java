package org.djlmegatron.cli;

import java.nio.file.Path;
import org.djlmegatron.data.HuggingFaceTextTokenizer;
import org.djlmegatron.data.TextTokenizer;
import org.djlmegatron.generation.TextGenerator;
import picocli.CommandLine.Option;

/** The checkpoint to generate from, shared by {@code generate} and {@code serve}. */
final class ModelOptions {

    @Option(names = "--checkpoint", required = true,
            description = "checkpoint directory: hf, megatron, megatron-dist or djl (detected)")
    Path checkpoint;

    @Option(names = "--model-config", description = "Megatron arguments as JSON, for a Megatron checkpoint without args")
    Path modelConfig;

    @Option(names = "--tp", defaultValue = "1", description = "tensor-parallel size (thread ranks, default: ${DEFAULT-VALUE})")
    int tp;

    @Option(names = "--tokenizer-type", defaultValue = HuggingFaceTextTokenizer.TYPE,
            description = "HuggingFaceTokenizer or ByteLevelTokenizer (UTF-8 bytes, no files) (default: ${DEFAULT-VALUE})")
    String tokenizerType;

    @Option(names = "--tokenizer-model",
            description = "tokenizer.json or its directory (default: the checkpoint directory's tokenizer.json, if any)")
    Path tokenizerModel;

    @Option(names = "--eos-id", description = "end-of-sequence id that stops a prompt (default: the tokenizer's eos_token, "
            + "else config.json's eos_token_id, else none)")
    Long eosId;

    TextGenerator open() {
        if (tp < 1) {
            throw new IllegalArgumentException("--tp must be >= 1, found " + tp);
        }
        if (tokenizerType.equals(HuggingFaceTextTokenizer.TYPE)) {
            return TextGenerator.open(checkpoint, modelConfig, tp, tokenizerModel, eosId);
        }
        return TextGenerator.withTokenizer(checkpoint, modelConfig, tp, TextTokenizer.create(tokenizerType, tokenizerModel),
                eosId);
    }
}
