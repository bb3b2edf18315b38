package org.djlmegatron.transformer;

import org.djlmegatron.nn.Norm;

/**
 * The shape of a GPT-family decoder, in Megatron-Core's vocabulary. One immutable record serves
 * GPT-2, Llama, Mistral, Qwen2/3 and Mixtral/Qwen3-MoE; build it with {@link #builder()}.
 *
 * @param numLayers decoder layers
 * @param hiddenSize model width
 * @param numAttentionHeads query heads
 * @param numQueryGroups key/value heads (GQA); equal to the heads for MHA
 * @param kvChannels per-head width
 * @param ffnHiddenSize dense MLP width (per half for gated MLPs)
 * @param vocabSize vocabulary rows of the embedding and output layer
 * @param maxPositionEmbeddings learned position rows (and the longest sequence)
 * @param normalization RMSNorm or LayerNorm
 * @param normEpsilon the norms' epsilon
 * @param activation MLP activation
 * @param positionEmbedding learned absolute positions or rotary
 * @param rotaryBase RoPE theta
 * @param addQkvBias bias on the fused q/k/v projection
 * @param addBiasLinear bias on the other linear layers
 * @param qkLayernorm per-head RMSNorm of queries and keys (Qwen3)
 * @param tieEmbeddings output layer shares the word-embedding weight
 * @param numExperts MoE experts per layer (0: dense MLP)
 * @param moeRouterTopK experts per token
 * @param moeFfnHiddenSize each expert's MLP width
 * @param moeRenormalizeTopK renormalise the top-k router probabilities to sum to one
 * @param ropeScaling scaling of the rotary frequencies (Llama 3.1's, linear), or null for none
 * @param moeSharedExpertIntermediateSize width of the shared experts' MLP that every token goes
 *     through beside the routed ones (Megatron's {@code moe_shared_expert_intermediate_size}; 0: none)
 * @param moeSharedExpertGate scale the shared experts' output by sigmoid(x . gate_weight), one
 *     scalar per token (Megatron's {@code moe_shared_expert_gate}, Qwen2-MoE's {@code shared_expert_gate})
 */
public record TransformerConfig(
        int numLayers,
        int hiddenSize,
        int numAttentionHeads,
        int numQueryGroups,
        int kvChannels,
        int ffnHiddenSize,
        int vocabSize,
        int maxPositionEmbeddings,
        Norm.Kind normalization,
        double normEpsilon,
        Activation activation,
        PositionEmbedding positionEmbedding,
        double rotaryBase,
        boolean addQkvBias,
        boolean addBiasLinear,
        boolean qkLayernorm,
        boolean tieEmbeddings,
        int numExperts,
        int moeRouterTopK,
        int moeFfnHiddenSize,
        boolean moeRenormalizeTopK,
        RopeScaling ropeScaling,
        int moeSharedExpertIntermediateSize,
        boolean moeSharedExpertGate) {

    /** MLP activations. */
    public enum Activation {
        /** silu(gate) * up, with a fused [gate; up] first projection. */
        SWIGLU,
        /** GELU with the tanh approximation (GPT-2's gelu_new). */
        GELU_TANH
    }

    /** How positions enter the model. */
    public enum PositionEmbedding {
        LEARNED_ABSOLUTE,
        ROPE
    }

    public TransformerConfig {
        positive("num_layers", numLayers);
        positive("hidden_size", hiddenSize);
        positive("num_attention_heads", numAttentionHeads);
        positive("num_query_groups", numQueryGroups);
        positive("kv_channels", kvChannels);
        positive("vocab_size", vocabSize);
        positive("max_position_embeddings", maxPositionEmbeddings);
        if (numAttentionHeads % numQueryGroups != 0) {
            throw new IllegalArgumentException("num_attention_heads " + numAttentionHeads
                    + " is not a multiple of num_query_groups " + numQueryGroups);
        }
        if (numExperts > 0 && addBiasLinear) {
            throw new IllegalArgumentException("add_bias_linear with MoE layers is not supported "
                    + "(num_experts=" + numExperts + "): expert biases would need per-token routing weights");
        }
        if (numExperts > 0 && (moeRouterTopK < 1 || moeRouterTopK > numExperts)) {
            throw new IllegalArgumentException("moe_router_topk " + moeRouterTopK
                    + " must be in [1, num_experts=" + numExperts + "]");
        }
        if (moeSharedExpertIntermediateSize < 0 || moeSharedExpertIntermediateSize > 0 && numExperts == 0) {
            throw new IllegalArgumentException("moe_shared_expert_intermediate_size must be 0, or > 0 with num_experts > 0;"
                    + " found " + moeSharedExpertIntermediateSize + " with num_experts=" + numExperts);
        }
        if (moeSharedExpertGate && moeSharedExpertIntermediateSize == 0) {
            throw new IllegalArgumentException("moe_shared_expert_gate needs moe_shared_expert_intermediate_size > 0");
        }
    }

    private static void positive(String name, int value) {
        if (value < 1) {
            throw new IllegalArgumentException(name + " must be positive, found " + value);
        }
    }

    public boolean isMoe() {
        return numExperts > 0;
    }

    /** Whether MoE layers have shared experts. */
    public boolean hasSharedExperts() {
        return moeSharedExpertIntermediateSize > 0;
    }

    public boolean isGated() {
        return activation == Activation.SWIGLU;
    }

    /** Query heads per key/value head. */
    public int headsPerGroup() {
        return numAttentionHeads / numQueryGroups;
    }

    /** Rows of the fused q/k/v weight: every group's queries, then its key, then its value. */
    public int qkvRows() {
        return (numAttentionHeads + 2 * numQueryGroups) * kvChannels;
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builder with Llama-like defaults. */
    public static final class Builder {
        private int numLayers = 2;
        private int hiddenSize = 64;
        private int numAttentionHeads = 4;
        private int numQueryGroups = -1;
        private int kvChannels = -1;
        private int ffnHiddenSize = -1;
        private int vocabSize = 512;
        private int maxPositionEmbeddings = 128;
        private Norm.Kind normalization = Norm.Kind.RMS_NORM;
        private double normEpsilon = 1e-5;
        private Activation activation = Activation.SWIGLU;
        private PositionEmbedding positionEmbedding = PositionEmbedding.ROPE;
        private double rotaryBase = 10000;
        private boolean addQkvBias;
        private boolean addBiasLinear;
        private boolean qkLayernorm;
        private boolean tieEmbeddings;
        private int numExperts;
        private int moeRouterTopK = 2;
        private int moeFfnHiddenSize = -1;
        private boolean moeRenormalizeTopK = true;
        private RopeScaling ropeScaling;
        private int moeSharedExpertIntermediateSize;
        private boolean moeSharedExpertGate;

        public Builder numLayers(int v) { numLayers = v; return this; }
        public Builder hiddenSize(int v) { hiddenSize = v; return this; }
        public Builder numAttentionHeads(int v) { numAttentionHeads = v; return this; }
        public Builder numQueryGroups(int v) { numQueryGroups = v; return this; }
        public Builder kvChannels(int v) { kvChannels = v; return this; }
        public Builder ffnHiddenSize(int v) { ffnHiddenSize = v; return this; }
        public Builder vocabSize(int v) { vocabSize = v; return this; }
        public Builder maxPositionEmbeddings(int v) { maxPositionEmbeddings = v; return this; }
        public Builder normalization(Norm.Kind v) { normalization = v; return this; }
        public Builder normEpsilon(double v) { normEpsilon = v; return this; }
        public Builder activation(Activation v) { activation = v; return this; }
        public Builder positionEmbedding(PositionEmbedding v) { positionEmbedding = v; return this; }
        public Builder rotaryBase(double v) { rotaryBase = v; return this; }
        public Builder addQkvBias(boolean v) { addQkvBias = v; return this; }
        public Builder addBiasLinear(boolean v) { addBiasLinear = v; return this; }
        public Builder qkLayernorm(boolean v) { qkLayernorm = v; return this; }
        public Builder tieEmbeddings(boolean v) { tieEmbeddings = v; return this; }
        public Builder numExperts(int v) { numExperts = v; return this; }
        public Builder moeRouterTopK(int v) { moeRouterTopK = v; return this; }
        public Builder moeFfnHiddenSize(int v) { moeFfnHiddenSize = v; return this; }
        public Builder moeRenormalizeTopK(boolean v) { moeRenormalizeTopK = v; return this; }
        public Builder ropeScaling(RopeScaling v) { ropeScaling = v; return this; }
        public Builder moeSharedExpertIntermediateSize(int v) { moeSharedExpertIntermediateSize = v; return this; }
        public Builder moeSharedExpertGate(boolean v) { moeSharedExpertGate = v; return this; }

        /** Fills Megatron's defaults: MHA, head width hidden/heads, ffn 4x hidden. */
        public TransformerConfig build() {
            int groups = numQueryGroups > 0 ? numQueryGroups : numAttentionHeads;
            if (kvChannels <= 0 && numAttentionHeads > 0 && hiddenSize % numAttentionHeads != 0) {
                // Megatron asserts this too: the head width would be truncated
                throw new IllegalArgumentException("hidden_size " + hiddenSize + " is not divisible by num_attention_heads "
                        + numAttentionHeads + " (give kv_channels for another head width)");
            }
            int kv = kvChannels > 0 ? kvChannels : hiddenSize / numAttentionHeads;
            int ffn = ffnHiddenSize > 0 ? ffnHiddenSize : 4 * hiddenSize;
            int moeFfn = moeFfnHiddenSize > 0 ? moeFfnHiddenSize : ffn;
            return new TransformerConfig(numLayers, hiddenSize, numAttentionHeads, groups, kv, ffn,
                    vocabSize, maxPositionEmbeddings, normalization, normEpsilon, activation,
                    positionEmbedding, rotaryBase, addQkvBias, addBiasLinear, qkLayernorm,
                    tieEmbeddings, numExperts, moeRouterTopK, moeFfn, moeRenormalizeTopK,
                    positionEmbedding == PositionEmbedding.ROPE ? ropeScaling : null,
                    moeSharedExpertIntermediateSize, moeSharedExpertGate);
        }
    }
}
