package org.djlmegatron.moe;

/**
 * Megatron's token dropping ({@code --moe-expert-capacity-factor},
 * {@code --moe-token-drop-policy}): each expert takes at most
 * {@code capacity = ceil(T k / E x factor)} of the (token, slot) pairs routed to it; beyond that,
 * {@code probs} keeps the pairs with the largest router weights, {@code position} the earliest
 * tokens. A dropped pair contributes nothing (the other weights are not renormalised).
 */
public final class ExpertCapacity {

    /** Which pairs an over-full expert keeps. */
    public enum DropPolicy { PROBS, POSITION }

    private ExpertCapacity() {}

    /** Megatron's {@code get_capacity(T k, E, factor)}. */
    public static int capacity(int tokens, int topK, int numExperts, double factor) {
        return (int) Math.ceil((double) tokens * topK / numExperts * factor);
    }

    /**
     * Which (token, slot) pairs are kept.
     *
     * @param chosen the expert of each pair, {@code [T * k]} row-major
     * @param weights the router weight of each pair, same layout
     */
    public static boolean[] keep(long[] chosen, float[] weights, int numExperts, int capacity, DropPolicy policy) {
        boolean[] kept = new boolean[chosen.length];
        for (int e = 0; e < numExperts; e++) {
            java.util.List<Integer> pairs = new java.util.ArrayList<>();
            for (int i = 0; i < chosen.length; i++) {
                if (chosen[i] == e) {
                    pairs.add(i); // in token order
                }
            }
            if (policy == DropPolicy.PROBS) { // stable: equal weights keep the earlier token
                pairs.sort((a, b) -> Float.compare(weights[b], weights[a]));
            }
            for (int j = 0; j < Math.min(capacity, pairs.size()); j++) {
                kept[pairs.get(j)] = true;
            }
        }
        return kept;
    }
}
