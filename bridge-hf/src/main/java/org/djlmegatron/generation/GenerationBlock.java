package org.djlmegatron.generation;

import ai.djl.Model;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.AbstractBlock;
import ai.djl.training.ParameterStore;
import ai.djl.util.PairList;
import java.util.List;

/**
 * Generation as a DJL block, for DJL's {@code Model}/{@code Predictor}: prompt ids in (int64,
 * {@code [s]}), new ids out ({@code [n]}). The weights live in the {@link TextGenerator}'s
 * thread ranks (at any tensor-parallel size), not in the block, which holds no parameters.
 * Pair it with {@link GenerationTranslator}:
 * <pre>{@code
 * try (TextGenerator gen = TextGenerator.open(dir, null, 2, null, null);
 *         Model model = GenerationBlock.model(gen, 64, Sampling.GREEDY, 0);
 *         Predictor<String, String> p = model.newPredictor(new GenerationTranslator(gen))) {
 *     String continuation = p.predict("Once upon a time");
 * }
 * }</pre>
 */
public final class GenerationBlock extends AbstractBlock {

    private final TextGenerator generator;
    private final int maxNewTokens;
    private final Sampling sampling;
    private final long seed;

    public GenerationBlock(TextGenerator generator, int maxNewTokens, Sampling sampling, long seed) {
        this.generator = generator;
        this.maxNewTokens = maxNewTokens;
        this.sampling = sampling;
        this.seed = seed;
        inputNames = List.of("prompt_ids");
    }

    /** A DJL model (PyTorch engine) whose block is a {@link GenerationBlock}. */
    public static Model model(TextGenerator generator, int maxNewTokens, Sampling sampling, long seed) {
        Model model = Model.newInstance("djl-megatron-generation", "PyTorch");
        model.setBlock(new GenerationBlock(generator, maxNewTokens, sampling, seed));
        return model;
    }

    @Override
    protected NDList forwardInternal(ParameterStore store, NDList inputs, boolean training, PairList<String, Object> params) {
        NDArray ids = inputs.singletonOrThrow();
        Generated g = generator.generate(List.of(new Prompt(ids.toLongArray(), maxNewTokens, sampling, seed)), false,
                TokenListener.NONE).get(0);
        return new NDList(ids.getManager().create(g.ids()));
    }

    @Override
    public Shape[] getOutputShapes(Shape[] inputShapes) {
        return new Shape[] {new Shape(-1)};
    }
}
