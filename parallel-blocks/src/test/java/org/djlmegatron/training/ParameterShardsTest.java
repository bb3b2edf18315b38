package org.djlmegatron.training;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.jni.JniUtils;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.engine.TorchNative;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.optim.LearningRateSchedule;
import org.djlmegatron.optim.LearningRateSchedule.AnnealStyle;
import org.djlmegatron.optim.LearningRateSchedule.DecayStyle;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.training.buffers.Overlap;
import org.djlmegatron.training.buffers.ShardingStrategy;
import org.djlmegatron.training.model.MicroBatch;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * ZeRO-3's freeing is real: on two thread ranks (DP=2), a tiny GPT with a segment per layer. While
 * the last layer runs its forward, layer 0's weight storage holds 0 bytes; while backward runs
 * layer 0's segment, the last layer's does; between steps every layer's storage holds 0 bytes and
 * the measured parameter bytes are this rank's shard. The steps still give no_shard's losses and
 * norms (1e-6), and an evaluation forward between steps and the logits after
 * {@link DistributedStep#gatherWeights} give no_shard's. With {@code --overlap-grad-reduce
 * --overlap-param-gather} the same holds, and the next unit is gathered ahead: layer 1's storage is
 * allocated at layer 0's first forward use, layer 0's before the last layer's backward segment
 * (without the overlap both are 0 bytes there). Native library only (storage resizing).
 */
@Tag("native")
class ParameterShardsTest {

    private static final Duration TIMEOUT = Duration.ofSeconds(120);
    private static final TransformerConfig CFG = TransformerConfig.builder().numLayers(3).hiddenSize(32)
            .numAttentionHeads(4).numQueryGroups(4).ffnHiddenSize(64).vocabSize(64).maxPositionEmbeddings(16).build();

    private record Run(List<double[]> steps, double evalLoss, float[] logits, long[] storageSeen, long paramBytes,
            long shardElements) {}

    @Test
    void layersAreFreedOutsideTheirPassesAndTheRunIsNoShards() {
        Run plain = noShard();
        List<Run> zero3 = LocalWorld.run(RankGrid.create(2, 1, 1, 1, 1), TIMEOUT,
                ctx -> run(ctx, ShardingStrategy.OPTIM_GRADS_PARAMS, Overlap.OFF));
        assertFreedAndNoShards(zero3, plain);
        for (Run r : zero3) {
            assertThat(r.storageSeen[5]).as("layer 1's storage at layer 0's first use, without overlap").isZero();
            assertThat(r.storageSeen[6]).as("layer 0's storage before the last layer's backward, without overlap").isZero();
        }
    }

    @Test
    void withOverlapTheNextLayerIsGatheredAheadAndTheRunIsNoShards() {
        Run plain = noShard();
        List<Run> zero3 = LocalWorld.run(RankGrid.create(2, 1, 1, 1, 1), TIMEOUT,
                ctx -> run(ctx, ShardingStrategy.OPTIM_GRADS_PARAMS, new Overlap(true, true, TIMEOUT)));
        assertFreedAndNoShards(zero3, plain);
        for (Run r : zero3) {
            assertThat(r.storageSeen[5]).as("layer 1's storage at layer 0's first use: gathered ahead").isPositive();
            assertThat(r.storageSeen[6]).as("layer 0's storage before the last layer's backward: gathered ahead")
                    .isPositive();
        }
    }

    private static Run noShard() {
        return LocalWorld.run(RankGrid.create(2, 1, 1, 1, 1), TIMEOUT,
                ctx -> run(ctx, ShardingStrategy.NO_SHARD, Overlap.OFF)).get(0);
    }

    private static void assertFreedAndNoShards(List<Run> zero3, Run plain) {
        for (Run r : zero3) {
            assertThat(r.storageSeen[0]).as("layer 0's storage during the last layer's forward").isZero();
            assertThat(r.storageSeen[1]).as("the last layer's storage while its forward runs").isPositive();
            assertThat(r.storageSeen[2]).as("the last layer's storage during layer 0's backward").isZero();
            assertThat(r.storageSeen[3]).as("layer 0's storage during its backward").isPositive();
            assertThat(r.storageSeen[4]).as("every layer's storage between steps").isZero();
            assertThat(r.paramBytes).as("measured parameter bytes between steps: the fp32 shard").isEqualTo(4 * r.shardElements);
            for (int i = 0; i < plain.steps.size(); i++) {
                assertThat(r.steps.get(i)[0]).as("loss of step %d", i).isCloseTo(plain.steps.get(i)[0], within(1e-6));
                assertThat(r.steps.get(i)[1]).as("grad norm of step %d", i).isCloseTo(plain.steps.get(i)[1], within(1e-6));
            }
            assertThat(r.evalLoss).as("evaluation between steps").isCloseTo(plain.evalLoss, within(1e-6));
            for (int i = 0; i < plain.logits.length; i++) {
                assertThat(r.logits[i]).as("logit %d after the run", i).isCloseTo(plain.logits[i], within(1e-5f));
            }
        }
        assertThat(zero3.get(0).paramBytes * 2).as("two ranks' shards vs the whole model")
                .isLessThan(plain.paramBytes + 4 * 16);
    }

    private static Run run(RankContext ctx, ShardingStrategy sharding, Overlap overlap) {
        GPTModel model = new GPTModel(ctx, CFG, false);
        model.initializeRandom(3, 0.02f);
        model.setLayerSegments(true);
        NDArray first = weightOf(model, "decoder.layers.0.");
        NDArray mid = weightOf(model, "decoder.layers.1.");
        NDArray last = weightOf(model, "decoder.layers.2.");
        long[] seen = new long[7];
        seen[5] = -1;
        List<double[]> steps = new ArrayList<>();
        StepConfig config = StepConfig.builder(1, new LearningRateSchedule(1e-2, 1e-2, 0, 10, DecayStyle.CONSTANT, 0,
                AnnealStyle.LINEAR)).globalBatchSize(4).clipGrad(1.0).sharding(sharding).build();
        try (DistributedStep step = new DistributedStep(ctx, model, config, overlap)) {
            boolean zero3 = step.shardsParameters();
            ctx.tape().onUse(p -> { // after the step's own listener: the used layer is gathered now
                if (zero3 && seen[1] == 0 && p instanceof ai.djl.nn.Parameter q && q.getArray() == last) { // the first forward
                    seen[0] = TorchNative.storageBytes(first);
                    seen[1] = TorchNative.storageBytes(last);
                }
                if (zero3 && seen[5] < 0 && p instanceof ai.djl.nn.Parameter q && q.getArray() == first) { // the first forward
                    seen[5] = TorchNative.storageBytes(mid);
                }
            });
            ctx.tape().beforeSegmentBackward(uses -> {
                if (zero3 && uses.stream().anyMatch(p -> p instanceof ai.djl.nn.Parameter q && q.getArray() == first)) {
                    seen[2] = TorchNative.storageBytes(last);
                    seen[3] = TorchNative.storageBytes(first);
                } else if (zero3 && uses.stream().anyMatch(p -> p instanceof ai.djl.nn.Parameter q && q.getArray() == last)) {
                    seen[6] = Math.max(seen[6], TorchNative.storageBytes(first));
                }
            });
            for (int it = 0; it < 3; it++) {
                StepResult r = step.step(List.of(batch(ctx.rank(), it, 0), batch(ctx.rank(), it, 1)));
                steps.add(new double[] {r.loss(), r.gradNorm()});
            }
            seen[4] = zero3 ? TorchNative.storageBytes(first) + TorchNative.storageBytes(last) : 0;
            long paramBytes = step.memory().parameterBytes();
            long shard = zero3 ? step.masters().getShape().get(0) : 0;
            double eval = evalLoss(ctx, model);
            step.gatherWeights();
            return new Run(steps, eval, logits(ctx, model), seen, paramBytes, shard);
        }
    }

    private static NDArray weightOf(GPTModel model, String prefix) {
        for (ShardedParameter sp : model.parameters()) {
            if (sp.name().startsWith(prefix) && sp.parameter().getArray().getShape().dimension() == 2) {
                return sp.parameter().getArray();
            }
        }
        throw new IllegalStateException("no 2-d weight under " + prefix);
    }

    /** Different tokens per rank, step and micro-batch. */
    private static MicroBatch batch(int rank, int it, int m) {
        long[][] rows = new long[1][17];
        for (int i = 0; i < 17; i++) {
            rows[0][i] = (5L * i + 11L * rank + 7L * it + 13L * m + 3) % 64;
        }
        return MicroBatch.shifted(rows);
    }

    private static double evalLoss(RankContext ctx, GPTModel model) {
        boolean grad = JniUtils.isGradMode();
        JniUtils.setGradMode(false);
        try (NDManager s = ctx.manager().newSubManager()) {
            MicroBatch mb = batch(0, 99, 0); // the same tokens on every rank: compared with rank 0 of no_shard
            NDArray x = s.create(mb.inputs(), new Shape(mb.rows(), mb.seq()));
            NDArray y = s.create(mb.labels(), new Shape(mb.rows(), mb.seq()));
            return model.loss(x, y).getFloat();
        } finally {
            JniUtils.setGradMode(grad);
        }
    }

    private static float[] logits(RankContext ctx, GPTModel model) {
        boolean grad = JniUtils.isGradMode();
        JniUtils.setGradMode(false);
        try (NDManager s = ctx.manager().newSubManager()) {
            MicroBatch mb = batch(0, 42, 0);
            return model.apply(s.create(mb.inputs(), new Shape(mb.rows(), mb.seq()))).toFloatArray();
        } finally {
            JniUtils.setGradMode(grad);
        }
    }
}
