package org.djlmegatron.data;

import java.nio.file.Path;

/**
 * Text to token ids, as Megatron's {@code --tokenizer-type} builds them. Implementations are
 * safe to call from many threads at once (preprocessing workers share one instance).
 */
public interface TextTokenizer extends AutoCloseable {

    /** The ids of {@code text}, with the special tokens that the tokenizer itself adds. */
    int[] encode(String text);

    /** The text of {@code ids}, special tokens kept (for inspecting samples). */
    String decode(long[] ids);

    /** Vocabulary size including added tokens (Megatron's {@code vocab_size}); picks the dtype. */
    int vocabSize();

    /**
     * The end-of-document id that {@code --append-eod} appends (Megatron's {@code eod}).
     *
     * @throws InvalidDataException if the tokenizer defines none
     */
    int eod();

    /** Names the tokenizer in messages, e.g. {@code HuggingFaceTokenizer(/models/llama2)}. */
    String describe();

    @Override
    void close();

    /**
     * Builds a tokenizer from Megatron's flags.
     *
     * @param type {@code HuggingFaceTokenizer} (a {@code tokenizer.json} file or a directory that
     *     holds one) or {@code ByteLevelTokenizer} (UTF-8 bytes, no model)
     * @param model the {@code --tokenizer-model} path; ignored by {@code ByteLevelTokenizer}
     */
    static TextTokenizer create(String type, Path model) {
        return create(type, model, null, null);
    }

    /**
     * As {@link #create(String, Path)}, with {@code GPT2BPETokenizer} as well.
     *
     * @param vocabFile {@code --vocab-file} (GPT-2's {@code vocab.json}), for {@code GPT2BPETokenizer}
     * @param mergeFile {@code --merge-file} (GPT-2's {@code merges.txt}), for {@code GPT2BPETokenizer}
     */
    static TextTokenizer create(String type, Path model, Path vocabFile, Path mergeFile) {
        switch (type) {
            case Gpt2BpeTokenizer.TYPE:
                return Gpt2BpeTokenizer.open(vocabFile, mergeFile);
            case HuggingFaceTextTokenizer.TYPE:
                if (model == null) {
                    throw new IllegalArgumentException("--tokenizer-type " + type
                            + " needs --tokenizer-model (a tokenizer.json or its directory)");
                }
                return HuggingFaceTextTokenizer.open(model);
            case ByteLevelTokenizer.TYPE:
                return new ByteLevelTokenizer();
            default:
                throw new IllegalArgumentException("unsupported --tokenizer-type " + type + "; expected "
                        + HuggingFaceTextTokenizer.TYPE + ", " + Gpt2BpeTokenizer.TYPE + " or " + ByteLevelTokenizer.TYPE);
        }
    }
}
