package org.djlmegatron.bridge.hf;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.io.SafetensorsReader;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.nn.ShardLayout;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.parallel.RankGrid;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Gradients of the HF causal-LM loss at TP=2 (shards re-assembled), with and without sequence
 * parallelism, against TP=1, for every parameter of the six fixtures; and the loss itself.
 */
class HfGradientParityTest {

    static Stream<Arguments> cases() {
        List<Arguments> out = new ArrayList<>();
        for (String m : Fixtures.HF_MODELS) {
            out.add(Arguments.of(m, false));
            out.add(Arguments.of(m, true));
        }
        return out.stream();
    }

    @ParameterizedTest(name = "{0} sp={1}")
    @MethodSource("cases")
    void tp2GradientsMatchTp1(String model, boolean sp) {
        long[] ids;
        try (SafetensorsReader g = SafetensorsReader.open(Fixtures.hf(model).resolve("golden.safetensors"))) {
            ids = g.loadLongs("input_ids");
        }
        try (HfCheckpoint ckpt = HfCheckpoint.open(Fixtures.hf(model))) {
            Grads one = LocalWorld.run(RankGrid.single(), ctx -> grads(ckpt, ctx, ids, false)).get(0);
            List<Grads> two = LocalWorld.run(RankGrid.create(2, 2, 1, 1, 1), ctx -> grads(ckpt, ctx, ids, sp));
            assertThat(two.get(0).loss).isEqualTo(two.get(1).loss);
            assertThat(Math.abs(two.get(0).loss - one.loss)).isLessThan(1e-5f);
            assertThat(two.get(0).byName.keySet()).containsExactlyElementsOf(one.byName.keySet());
            try (NDManager m = NDManager.newBaseManager()) {
                for (String name : one.byName.keySet()) {
                    Shard s0 = two.get(0).byName.get(name);
                    Shard s1 = two.get(1).byName.get(name);
                    NDArray full = ShardedParameter.assemble(s0.layout,
                            List.of(m.create(s0.grad, s0.shape), m.create(s1.grad, s1.shape)));
                    if (s0.layout == ShardLayout.REPLICATED) {
                        assertThat(s1.grad).as("%s replicated on both ranks", name).containsExactly(s0.grad);
                    }
                    float[] expected = one.byName.get(name).grad;
                    assertThat(relativeError(full.toFloatArray(), expected)).as(name).isLessThanOrEqualTo(1e-5);
                }
            }
        }
    }

    private static Grads grads(HfCheckpoint ckpt, org.djlmegatron.parallel.RankContext ctx, long[] ids, boolean sp) {
        GPTModel gpt = new GPTModel(ctx, ckpt.config(), sp);
        ckpt.loadInto(gpt);
        NDArray input = ctx.manager().create(ids, new Shape(2, ids.length / 2));
        NDArray loss = gpt.causalLmLoss(input);
        ctx.tape().backward(loss);
        gpt.reducePartialGradients();
        Grads out = new Grads(loss.getFloat());
        for (ShardedParameter p : gpt.parameters()) {
            NDArray g = p.parameter().getArray().getGradient();
            out.byName.put(p.name(), new Shard(p.layout(), g.getShape(), g.toFloatArray()));
        }
        return out;
    }

    /** max |a - b| / max |b|. */
    static double relativeError(float[] a, float[] b) {
        double diff = 0;
        double scale = 0;
        for (int i = 0; i < a.length; i++) {
            diff = Math.max(diff, Math.abs(a[i] - b[i]));
            scale = Math.max(scale, Math.abs(b[i]));
        }
        return scale == 0 ? diff : diff / scale;
    }

    private record Shard(ShardLayout layout, Shape shape, float[] grad) {}

    private static final class Grads {
        final float loss;
        final Map<String, Shard> byName = new LinkedHashMap<>();

        Grads(float loss) {
            this.loss = loss;
        }
    }
}
