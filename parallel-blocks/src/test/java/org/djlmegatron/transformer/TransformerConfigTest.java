package org.djlmegatron.transformer;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

/** Megatron's shape checks on the config, whatever it comes from (flags, HF config.json, a checkpoint). */
class TransformerConfigTest {

    @Test
    void hiddenSizeMustDivideIntoTheHeadsUnlessTheHeadWidthIsGiven() {
        assertThatThrownBy(() -> TransformerConfig.builder().numLayers(1).hiddenSize(66).numAttentionHeads(4)
                .vocabSize(64).maxPositionEmbeddings(16).build())
                .hasMessage("hidden_size 66 is not divisible by num_attention_heads 4 (give kv_channels for another head width)");
        TransformerConfig explicit = TransformerConfig.builder().numLayers(1).hiddenSize(66).numAttentionHeads(4)
                .kvChannels(16).vocabSize(64).maxPositionEmbeddings(16).build();
        assertThat(explicit.kvChannels()).isEqualTo(16);
    }
}
