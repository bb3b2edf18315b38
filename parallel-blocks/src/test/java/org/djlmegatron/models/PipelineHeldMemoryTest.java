package org.djlmegatron.models;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.optim.LearningRateSchedule;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.training.DistributedStep;
import org.djlmegatron.training.StepConfig;
import org.djlmegatron.training.model.MicroBatch;
import org.djlmegatron.transformer.TransformerConfig;
import org.junit.jupiter.api.Test;

/**
 * What pipelining costs in activation memory: under 1F1B, stage r has {@code min(p - r, m)}
 * micro-batches in flight (its warm-up forwards plus one), and each keeps what its forward made
 * until its backward is done. The peak a rank's step reports is exactly that many times what one
 * micro-batch keeps on the same stage (measured with a single micro-batch per step).
 */
class PipelineHeldMemoryTest {

    private static final int SEQ = 16;

    /** Per pipeline rank: the peak bytes held for backward during the first step of {@code micro} micro-batches. */
    private static List<Long> peakHeld(int pp, int micro) {
        TransformerConfig cfg = TransformerConfig.builder().numLayers(4).hiddenSize(32).numAttentionHeads(4)
                .numQueryGroups(4).ffnHiddenSize(128).vocabSize(128).maxPositionEmbeddings(SEQ).build();
        StepConfig config = StepConfig.builder(1, LearningRateSchedule.constant(1e-3)).globalBatchSize(micro).build();
        return LocalWorld.run(RankGrid.create(pp, 1, pp, 1, 1), ctx -> {
            int stage = ctx.grid().ppRank(ctx.rank());
            int perStage = cfg.numLayers() / pp;
            GPTModel model = new GPTModel(ctx, cfg, false, stage * perStage, (stage + 1) * perStage);
            model.initializeRandom(3, 0.02f);
            try (DistributedStep step = new DistributedStep(ctx, model, config)) {
                assertThat(step.heldBytes()).isEqualTo(-1);
                step.measureHeldBytes();
                step.step(batches(micro));
                return step.heldBytes();
            }
        });
    }

    private static List<MicroBatch> batches(int n) {
        List<MicroBatch> out = new ArrayList<>();
        for (int m = 0; m < n; m++) {
            long[][] row = new long[1][SEQ + 1];
            for (int t = 0; t <= SEQ; t++) {
                row[0][t] = (7L * m + 3L * t) % 128;
            }
            out.add(MicroBatch.shifted(row));
        }
        return out;
    }

    @Test
    void eachStageHoldsItsInFlightMicroBatchesAtThePeak() {
        for (int pp : new int[] {2, 4}) {
            List<Long> one = peakHeld(pp, 1);
            List<Long> eight = peakHeld(pp, 8);
            List<Long> two = peakHeld(pp, 2);
            for (int r = 0; r < pp; r++) {
                assertThat(one.get(r)).as("PP%d rank %d, one micro-batch", pp, r).isPositive();
                assertThat(eight.get(r)).as("PP%d rank %d, 8 micro-batches: %d in flight", pp, r, pp - r)
                        .isEqualTo((pp - r) * one.get(r));
                assertThat(two.get(r)).as("PP%d rank %d, 2 micro-batches: %d in flight", pp, r, Math.min(pp - r, 2))
                        .isEqualTo(Math.min(pp - r, 2) * one.get(r));
            }
        }
    }
}
