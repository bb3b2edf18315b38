package org.djlmegatron.parallel;

/** The kinds of process group a rank belongs to, as in Megatron-Core's {@code parallel_state}. */
public enum GroupKind {
    /** Tensor-parallel group: ranks that shard one layer's weights (consecutive global ranks). */
    TENSOR,
    /** Pipeline-parallel group: one rank per stage. */
    PIPELINE,
    /** Data-parallel group (excluding context parallelism). */
    DATA,
    /** Context-parallel group: ranks that split one sequence. */
    CONTEXT,
    /** Data x context group: the group gradients are reduced over. */
    DATA_CONTEXT,
    /** Model-parallel group: tensor x pipeline. */
    MODEL,
    /** Expert-parallel group: ranks that hold different experts of one MoE layer. */
    EXPERT,
    /** Expert-data-parallel group: replicas of the same experts. */
    EXPERT_DATA
}
