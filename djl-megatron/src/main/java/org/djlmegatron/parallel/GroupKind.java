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
    EXPERT_DATA,
    /**
     * The ranks of {@link #DATA_CONTEXT} again, as a communicator of their own for the
     * communication thread's overlapped reductions and gathers ({@code --overlap-grad-reduce}):
     * Megatron runs them on a stream of their own, so that they never interleave with the
     * collectives the step and the driver issue on the data group meanwhile (e.g. the MoE balance
     * statistics between two steps, while the next step's weights are still being gathered).
     */
    DATA_CONTEXT_OVERLAP,
    /** The ranks of {@link #EXPERT_DATA} again, for overlapped work (see {@link #DATA_CONTEXT_OVERLAP}). */
    EXPERT_DATA_OVERLAP
}
