package org.djlmegatron.models;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.MalformedModelException;
import ai.djl.Model;
import ai.djl.inference.Predictor;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.Shape;
import ai.djl.translate.NoopTranslator;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.transformer.TransformerConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * DJL's Block contract for a tensor-parallel GPTModel (TP=2, sequence parallel): getOutputShapes
 * gives the shape forward produces; Model.save writes each rank's shards and Model.load puts them
 * into a differently initialised model, which then gives the saved model's logits bit for bit; a
 * rank file loaded into the other rank is refused; a DJL Predictor gives the block's logits.
 */
class DjlBlockContractTest {

    @TempDir
    Path dir;

    @Test
    void outputShapesSaveLoadAndPredictorOnTensorParallelRanks() {
        TransformerConfig cfg = TransformerConfig.builder().numLayers(2).hiddenSize(64).numAttentionHeads(4)
                .numQueryGroups(2).ffnHiddenSize(128).vocabSize(256).maxPositionEmbeddings(32).build();
        long[] ids = new long[2 * 16];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = (i * 37L) % 256;
        }
        List<String> failures = LocalWorld.run(RankGrid.create(2, 2, 1, 1, 1), ctx -> {
            try {
                GPTModel saved = new GPTModel(ctx, cfg, true);
                saved.initializeRandom(7, 0.02f);
                NDArray x = ctx.manager().create(ids, new Shape(2, 16));
                NDArray logits = saved.apply(x);
                assertThat(saved.getOutputShapes(new Shape[] {x.getShape()})).containsExactly(logits.getShape());
                assertThat(logits.getShape()).isEqualTo(new Shape(2, 16, 128)); // the rank's half of the vocabulary
                String name = "gpt-tp" + ctx.rank();
                try (Model model = Model.newInstance("saved", ctx.manager().getDevice())) {
                    model.setBlock(saved);
                    model.save(dir, name);
                    try (Predictor<NDList, NDList> predictor = model.newPredictor(new NoopTranslator())) {
                        float[] predicted = predictor.predict(new NDList(x)).head().toFloatArray();
                        assertThat(predicted).containsExactly(logits.toFloatArray());
                    }
                }
                GPTModel loaded = new GPTModel(ctx, cfg, true);
                loaded.initializeRandom(99, 0.02f);
                assertThat(Arrays.equals(loaded.apply(x).toFloatArray(), logits.toFloatArray())).isFalse();
                try (Model model = Model.newInstance("loaded", ctx.manager().getDevice())) {
                    model.setBlock(loaded);
                    model.load(dir, name);
                    assertThat(loaded.apply(x).toFloatArray()).containsExactly(logits.toFloatArray());
                }
                GPTModel other = new GPTModel(ctx, cfg, true);
                try (Model model = Model.newInstance("other", ctx.manager().getDevice())) {
                    model.setBlock(other);
                    assertThatThrownBy(() -> model.load(dir, "gpt-tp" + (1 - ctx.rank())))
                            .isInstanceOf(MalformedModelException.class)
                            .hasMessageContaining("saved by tensor-parallel rank " + (1 - ctx.rank()) + " of 2");
                }
                return "";
            } catch (Exception | AssertionError e) {
                java.io.StringWriter w = new java.io.StringWriter();
                e.printStackTrace(new java.io.PrintWriter(w));
                return "rank " + ctx.rank() + ": " + w.toString().lines().limit(8).toList();
            }
        });
        assertThat(failures).containsOnly("");
    }
}
