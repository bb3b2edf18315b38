package org.djlmegatron.generation;

import ai.djl.ndarray.NDList;
import ai.djl.translate.NoBatchifyTranslator;
import ai.djl.translate.TranslatorContext;

/**
 * DJL's {@code Translator<String, String>} for a {@link GenerationBlock}: the prompt through the
 * generator's tokenizer in, the new tokens' text out (so {@code predictor.predict(prompt)} returns
 * the continuation). Needs a tokenizer; without one, feed the block token ids directly.
 */
public final class GenerationTranslator implements NoBatchifyTranslator<String, String> {

    private final TextGenerator generator;

    public GenerationTranslator(TextGenerator generator) {
        if (generator.tokenizer().isEmpty()) {
            throw new InvalidRequestException("no tokenizer: a text translator needs the checkpoint's tokenizer.json "
                    + "or an explicit tokenizer");
        }
        this.generator = generator;
    }

    @Override
    public NDList processInput(TranslatorContext ctx, String prompt) {
        return new NDList(ctx.getNDManager().create(generator.encode(prompt)));
    }

    @Override
    public String processOutput(TranslatorContext ctx, NDList list) {
        return generator.decode(list.singletonOrThrow().toLongArray());
    }
}
