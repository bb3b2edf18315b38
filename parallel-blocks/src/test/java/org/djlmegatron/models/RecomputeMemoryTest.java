package org.djlmegatron.models;

import static org.assertj.core.api.Assertions.assertThat;
import static org.djlmegatron.ParityHarness.onRanks;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.Set;
import org.djlmegatron.engine.HeldMemory;
import org.djlmegatron.transformer.Recompute;
import org.djlmegatron.transformer.TransformerConfig;
import org.junit.jupiter.api.Test;

/**
 * What a forward keeps for backward, measured as the bytes its manager holds: full recomputation
 * (uniform, one layer per group) keeps exactly one {@code [b, s, h]} fp32 input per layer, and
 * each recomputation mode keeps less than the one before it.
 */
class RecomputeMemoryTest {

    private static final int B = 2;
    private static final int S = 32;
    private static final int H = 64;

    private static long held(int layers, int tp, boolean sp, Recompute recompute) {
        TransformerConfig cfg = TransformerConfig.builder().numLayers(layers).hiddenSize(H).numAttentionHeads(4)
                .numQueryGroups(4).ffnHiddenSize(4 * H).vocabSize(128).maxPositionEmbeddings(S).build();
        return onRanks(tp, ctx -> {
            GPTModel model = new GPTModel(ctx, cfg, sp);
            model.initializeRandom(1, 0.02f);
            model.setRecompute(recompute);
            try (NDManager step = ctx.manager().newSubManager()) {
                NDArray ids = step.arange(0, B * S, 1, DataType.INT64).mod(128).reshape(B, S);
                model.causalLmLoss(ids);
                long bytes = HeldMemory.bytes(step);
                ctx.tape().clear();
                return bytes;
            }
        }).get(0);
    }

    private static final Recompute FULL_1 = Recompute.full(Recompute.Method.UNIFORM, 1);

    @Test
    void fullRecomputationKeepsOneLayerInputPerLayer() {
        long two = held(2, 1, false, FULL_1);
        long four = held(4, 1, false, FULL_1);
        assertThat(four - two).as("two more layers").isEqualTo(2L * B * S * H * 4);
    }

    @Test
    void underSequenceParallelismEachRankKeepsItsSlice() {
        long two = held(2, 2, true, FULL_1);
        long four = held(4, 2, true, FULL_1);
        assertThat(four - two).as("two more layers, half the sequence each").isEqualTo(2L * B * (S / 2) * H * 4);
    }

    @Test
    void eachModeKeepsLessThanNone() {
        long none = held(4, 1, false, Recompute.NONE);
        long coreAttn = held(4, 1, false, Recompute.selective(Set.of(Recompute.Module.CORE_ATTN)));
        long selectiveAll = held(4, 1, false, Recompute.selective(
                Set.of(Recompute.Module.CORE_ATTN, Recompute.Module.MLP, Recompute.Module.LAYERNORM)));
        long full = held(4, 1, false, FULL_1);
        long fullTwo = held(4, 1, false, Recompute.full(Recompute.Method.UNIFORM, 2));
        assertThat(coreAttn).isLessThan(none);
        assertThat(selectiveAll).isLessThan(coreAttn);
        assertThat(full).isLessThan(selectiveAll);
        assertThat(fullTwo).as("groups of two keep half the layer inputs").isEqualTo(full - 2L * B * S * H * 4);
        System.out.printf("held for backward (4 layers, b=%d s=%d h=%d): none %d, core_attn %d, selective all %d, "
                + "full uniform 1 %d, full uniform 2 %d%n", B, S, H, none, coreAttn, selectiveAll, full, fullTwo);
    }
}
