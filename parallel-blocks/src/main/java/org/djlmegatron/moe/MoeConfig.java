package org.djlmegatron.moe;

import java.util.Locale;

/**
 * How MoE layers route and balance, with Megatron's flag semantics (set on a built model with
 * {@code GPTModel.setMoe}; the expert count, top-k and renormalisation come from the model's
 * {@code TransformerConfig}).
 *
 * @param scoreFunction {@code --moe-router-score-function}
 * @param loadBalancing {@code --moe-router-load-balancing-type}
 * @param auxLossCoeff {@code --moe-aux-loss-coeff} (0: no load-balancing loss)
 * @param zLossCoeff {@code --moe-z-loss-coeff} (0: no z-loss)
 * @param dispatcher {@code --moe-token-dispatcher-type}
 * @param capacityFactor {@code --moe-expert-capacity-factor}, null for dropless
 * @param dropPolicy {@code --moe-token-drop-policy}
 * @param padToCapacity {@code --moe-pad-expert-input-to-capacity}: every expert gets exactly
 *     capacity rows (zero rows fill the rest)
 * @param groupedGemm {@code --moe-grouped-gemm}: the local experts' MLPs as batched GEMMs over
 *     their rows zero-padded to the largest count, instead of one GEMM pair per expert
 * @param sharedExpertOverlap {@code --moe-shared-expert-overlap}: the dispatch's exchange runs on a
 *     communication thread while the shared experts compute (alltoall dispatcher only, Megatron's rule)
 */
public record MoeConfig(ScoreFunction scoreFunction, LoadBalancing loadBalancing, double auxLossCoeff,
        double zLossCoeff, Dispatcher dispatcher, Double capacityFactor, ExpertCapacity.DropPolicy dropPolicy,
        boolean padToCapacity, boolean groupedGemm, boolean sharedExpertOverlap) {

    /** The router's score function. */
    public enum ScoreFunction { SOFTMAX, SIGMOID }

    /** The load-balancing loss. */
    public enum LoadBalancing { AUX_LOSS, SEQ_AUX_LOSS, NONE }

    /** How tokens reach the experts of other expert-parallel ranks. */
    public enum Dispatcher { ALLTOALL, ALLGATHER }

    /** What a plain inference or fine-tuning run uses: softmax, no extra losses, all-to-all. */
    public static final MoeConfig DEFAULT = new MoeConfig(ScoreFunction.SOFTMAX, LoadBalancing.NONE, 0, 0,
            Dispatcher.ALLTOALL, null, ExpertCapacity.DropPolicy.PROBS, false, false, false);

    /** Without the shared-expert overlap. */
    public MoeConfig(ScoreFunction scoreFunction, LoadBalancing loadBalancing, double auxLossCoeff, double zLossCoeff,
            Dispatcher dispatcher, Double capacityFactor, ExpertCapacity.DropPolicy dropPolicy, boolean padToCapacity,
            boolean groupedGemm) {
        this(scoreFunction, loadBalancing, auxLossCoeff, zLossCoeff, dispatcher, capacityFactor, dropPolicy,
                padToCapacity, groupedGemm, false);
    }

    /** Without capacity (dropless). */
    public MoeConfig(ScoreFunction scoreFunction, LoadBalancing loadBalancing, double auxLossCoeff, double zLossCoeff,
            Dispatcher dispatcher) {
        this(scoreFunction, loadBalancing, auxLossCoeff, zLossCoeff, dispatcher, null, ExpertCapacity.DropPolicy.PROBS,
                false, false, false);
    }

    public MoeConfig {
        if (auxLossCoeff < 0 || zLossCoeff < 0 || !Double.isFinite(auxLossCoeff) || !Double.isFinite(zLossCoeff)) {
            throw new IllegalArgumentException("--moe-aux-loss-coeff and --moe-z-loss-coeff must be finite and >= 0, got "
                    + auxLossCoeff + " and " + zLossCoeff);
        }
        if (capacityFactor != null && !(capacityFactor > 0 && Double.isFinite(capacityFactor))) {
            throw new IllegalArgumentException("--moe-expert-capacity-factor must be > 0, got " + capacityFactor);
        }
        if (padToCapacity && capacityFactor == null) {
            throw new IllegalArgumentException("--moe-pad-expert-input-to-capacity needs --moe-expert-capacity-factor");
        }
        if (sharedExpertOverlap && dispatcher != Dispatcher.ALLTOALL) {
            throw new IllegalArgumentException("--moe-shared-expert-overlap needs --moe-token-dispatcher-type alltoall "
                    + "(Megatron's rule), got " + dispatcher.name().toLowerCase(Locale.ROOT));
        }
    }

    /** Whether a load-balancing loss is added to the training loss. */
    public boolean hasAuxLoss() {
        return loadBalancing != LoadBalancing.NONE && auxLossCoeff > 0;
    }

    /** Parses a flag value such as {@code seq_aux_loss} into an enum constant, naming the flag on error. */
    public static <E extends Enum<E>> E parse(Class<E> type, String flag, String value) {
        for (E e : type.getEnumConstants()) {
            if (e.name().toLowerCase(Locale.ROOT).equals(value)) {
                return e;
            }
        }
        StringBuilder allowed = new StringBuilder();
        for (E e : type.getEnumConstants()) {
            allowed.append(allowed.length() == 0 ? "" : "|").append(e.name().toLowerCase(Locale.ROOT));
        }
        throw new IllegalArgumentException(flag + " must be one of " + allowed + ", got \"" + value + "\"");
    }
}
