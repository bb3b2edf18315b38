package org.djlmegatron.pretrain;

import org.djlmegatron.moe.MoeConfig;
import picocli.CommandLine.Option;

/** {@code pretrain-gpt}'s expert-parallel and MoE router options, Megatron-LM's names and rules. */
public final class MoeOptions {

    @Option(names = "--expert-model-parallel-size", defaultValue = "1",
            description = "ranks that split each MoE layer's experts (num_experts/EP each), carved out of data "
                    + "parallelism (default: ${DEFAULT-VALUE})")
    public int expertModelParallelSize;
    @Option(names = "--expert-tensor-parallel-size",
            description = "tensor parallelism inside each expert; only the tensor-parallel size is supported "
                    + "(default: --tensor-model-parallel-size)")
    public Integer expertTensorParallelSize;
    @Option(names = "--moe-token-dispatcher-type", defaultValue = "allgather",
            description = "alltoall (variable-split exchange) or allgather (every rank's tokens everywhere, "
                    + "reduce-scatter back) (default: ${DEFAULT-VALUE})")
    public String moeTokenDispatcherType;
    @Option(names = "--moe-router-score-function", defaultValue = "softmax",
            description = "softmax or sigmoid (top-k weights renormalised when k > 1) (default: ${DEFAULT-VALUE})")
    public String moeRouterScoreFunction;
    @Option(names = "--moe-router-load-balancing-type", defaultValue = "aux_loss",
            description = "aux_loss (per micro-batch), seq_aux_loss (per sequence) or none (default: ${DEFAULT-VALUE})")
    public String moeRouterLoadBalancingType;
    @Option(names = "--moe-aux-loss-coeff", defaultValue = "0.0",
            description = "coefficient of the load-balancing loss; 0 turns it off (default: ${DEFAULT-VALUE})")
    public double moeAuxLossCoeff;
    @Option(names = "--moe-z-loss-coeff", defaultValue = "0.0",
            description = "coefficient of the router z-loss; 0 turns it off (default: ${DEFAULT-VALUE})")
    public double moeZLossCoeff;

    @Option(names = "--moe-expert-capacity-factor",
            description = "each expert takes at most ceil(tokens x topk / experts x factor) pairs; default: none (dropless)")
    public Double moeExpertCapacityFactor;
    @Option(names = "--moe-token-drop-policy", defaultValue = "probs",
            description = "over capacity, keep the largest router weights (probs) or the earliest tokens (position) "
                    + "(default: ${DEFAULT-VALUE})")
    public String moeTokenDropPolicy;
    @Option(names = "--moe-pad-expert-input-to-capacity",
            description = "pad every expert's input with zero rows to the capacity (needs --moe-expert-capacity-factor)")
    public boolean moePadExpertInputToCapacity;

    @Option(names = "--moe-grouped-gemm",
            description = "run the local experts as batched GEMMs (rows zero-padded to the busiest expert) instead of "
                    + "one GEMM pair per expert (default: off)")
    public boolean moeGroupedGemm;

    @Option(names = "--moe-shared-expert-overlap",
            description = "run the token dispatch's all-to-all on a communication thread while the shared experts "
                    + "compute (needs shared experts and --moe-token-dispatcher-type alltoall) (default: off)")
    public boolean moeSharedExpertOverlap;

    @Option(names = "--moe-router-enable-expert-bias",
            description = "aux-loss-free balancing: a per-expert bias on the routing scores, updated after each step "
                    + "(sigmoid score function only)")
    public boolean moeRouterEnableExpertBias;
    @Option(names = "--moe-router-bias-update-rate", defaultValue = "1e-3",
            description = "how far each step moves the expert bias (default: ${DEFAULT-VALUE})")
    public double moeRouterBiasUpdateRate;

    /** The routing and balancing of the MoE layers; errors name the flag. */
    public MoeConfig config() {
        return new MoeConfig(
                MoeConfig.parse(MoeConfig.ScoreFunction.class, "--moe-router-score-function", moeRouterScoreFunction),
                MoeConfig.parse(MoeConfig.LoadBalancing.class, "--moe-router-load-balancing-type",
                        moeRouterLoadBalancingType),
                moeAuxLossCoeff, moeZLossCoeff,
                MoeConfig.parse(MoeConfig.Dispatcher.class, "--moe-token-dispatcher-type", moeTokenDispatcherType),
                moeExpertCapacityFactor,
                MoeConfig.parse(org.djlmegatron.moe.ExpertCapacity.DropPolicy.class, "--moe-token-drop-policy",
                        moeTokenDropPolicy),
                moePadExpertInputToCapacity, moeGroupedGemm, moeSharedExpertOverlap);
    }

    /** {@code --moe-shared-expert-overlap} overlaps the shared experts: refused on a model without them. */
    public void checkSharedExpertOverlap(boolean hasSharedExperts) {
        if (moeSharedExpertOverlap && !hasSharedExperts) {
            throw new IllegalArgumentException("--moe-shared-expert-overlap needs shared experts "
                    + "(--moe-shared-expert-intermediate-size, or a checkpoint with them); the model has none");
        }
    }

    /**
     * Megatron's rules for the layout: EP >= 1, the expert-tensor size equal to the tensor size
     * (the only one the rank grid builds), sequence parallelism when EP and TP are both above 1.
     */
    public void checkLayout(int tensorParallel, boolean sequenceParallel, int numExperts) {
        if (expertModelParallelSize < 1) {
            throw new IllegalArgumentException("--expert-model-parallel-size must be >= 1, got " + expertModelParallelSize);
        }
        if (expertTensorParallelSize != null && expertTensorParallelSize != tensorParallel) {
            throw new IllegalArgumentException("--expert-tensor-parallel-size " + expertTensorParallelSize
                    + " is not supported: expert layers use the tensor-parallel size ("
                    + "--tensor-model-parallel-size " + tensorParallel + ")");
        }
        if (expertModelParallelSize > 1 && tensorParallel > 1 && !sequenceParallel) {
            throw new IllegalArgumentException("--expert-model-parallel-size " + expertModelParallelSize
                    + " with --tensor-model-parallel-size " + tensorParallel
                    + " needs --sequence-parallel (Megatron's rule for expert and tensor parallelism)");
        }
        if (expertModelParallelSize > 1 && numExperts == 0) {
            throw new IllegalArgumentException("--expert-model-parallel-size " + expertModelParallelSize
                    + " needs an MoE model (--num-experts or an MoE --init-hf checkpoint)");
        }
    }
}
