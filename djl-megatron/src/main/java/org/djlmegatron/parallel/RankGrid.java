package org.djlmegatron.parallel;

import java.util.ArrayList;
import java.util.Collections;
import java.util.EnumMap;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.djlmegatron.parallel.RankLayout.Dim;

/**
 * How the ranks of a job are split into tensor-, pipeline-, context-, data- and expert-parallel
 * groups, following Megatron-Core's {@code initialize_model_parallel} with its default order
 * "tp-cp-ep-dp-pp": the tensor rank varies fastest (TP groups are consecutive ranks), the
 * pipeline rank slowest.
 *
 * <p>Dense layers use {@code world = tp * cp * dp * pp}. Expert layers use a second layout,
 * {@code world = tp * ep * expertDp * pp} (the expert-tensor size is {@code tp}, as in Megatron
 * when {@code expert_tensor_parallel_size} is not set), which shares the pipeline groups with the
 * dense layout. Immutable.
 *
 * <p>Example (Megatron's docstring): world 16, tp 2, pp 4 gives tensor groups [0,1], [2,3], ...,
 * pipeline groups [0,4,8,12], [1,5,9,13], ... and data groups [0,2], [1,3], [4,6], ....
 */
public final class RankGrid {

    private final int worldSize;
    private final int tp;
    private final int pp;
    private final int cp;
    private final int ep;
    private final int dp;
    private final int expertDp;
    private final RankLayout dense;
    private final RankLayout expert;
    private final Map<GroupKind, List<int[]>> groups = new EnumMap<>(GroupKind.class);
    /** For every kind, the index into {@code groups} of the group holding each global rank. */
    private final Map<GroupKind, int[]> groupOfRank = new EnumMap<>(GroupKind.class);

    private RankGrid(int worldSize, int tp, int pp, int cp, int ep) {
        this.worldSize = worldSize;
        this.tp = tp;
        this.pp = pp;
        this.cp = cp;
        this.ep = ep;
        this.dp = worldSize / (tp * pp * cp);
        this.expertDp = worldSize / (tp * ep * pp);
        this.dense = new RankLayout(tp, cp, 1, dp, pp);
        this.expert = new RankLayout(tp, 1, ep, expertDp, pp);
        put(GroupKind.TENSOR, dense.groups(EnumSet.of(Dim.TP)));
        put(GroupKind.PIPELINE, dense.groups(EnumSet.of(Dim.PP)));
        put(GroupKind.DATA, dense.groups(EnumSet.of(Dim.DP)));
        put(GroupKind.CONTEXT, dense.groups(EnumSet.of(Dim.CP)));
        put(GroupKind.DATA_CONTEXT, dense.groups(EnumSet.of(Dim.DP, Dim.CP)));
        put(GroupKind.MODEL, dense.groups(EnumSet.of(Dim.TP, Dim.PP)));
        put(GroupKind.EXPERT, expert.groups(EnumSet.of(Dim.EP)));
        put(GroupKind.EXPERT_DATA, expert.groups(EnumSet.of(Dim.DP)));
        put(GroupKind.DATA_CONTEXT_OVERLAP, dense.groups(EnumSet.of(Dim.DP, Dim.CP)));
        put(GroupKind.EXPERT_DATA_OVERLAP, expert.groups(EnumSet.of(Dim.DP)));
    }

    /**
     * Builds the grid of {@code worldSize} ranks.
     *
     * @param worldSize number of ranks
     * @param tp tensor-parallel size
     * @param pp pipeline-parallel size
     * @param cp context-parallel size
     * @param ep expert-parallel size (MoE layers only)
     * @return the grid; the data-parallel size is {@code worldSize / (tp * pp * cp)}
     * @throws IllegalArgumentException if a size is below 1 or the sizes do not tile the world
     */
    public static RankGrid create(int worldSize, int tp, int pp, int cp, int ep) {
        requirePositive("world size", worldSize);
        requirePositive("tensor-parallel size", tp);
        requirePositive("pipeline-parallel size", pp);
        requirePositive("context-parallel size", cp);
        requirePositive("expert-parallel size", ep);
        long modelSize = (long) tp * pp * cp;
        if (worldSize % modelSize != 0) {
            throw new IllegalArgumentException(String.format(
                    "world size %d is not divisible by tp*pp*cp = %d*%d*%d = %d",
                    worldSize, tp, pp, cp, modelSize));
        }
        long expertSize = (long) tp * ep * pp;
        if (worldSize % expertSize != 0) {
            throw new IllegalArgumentException(String.format(
                    "world size %d is not divisible by the expert layout tp*ep*pp = %d*%d*%d = %d"
                            + " (the expert-tensor size is tp)",
                    worldSize, tp, ep, pp, expertSize));
        }
        return new RankGrid(worldSize, tp, pp, cp, ep);
    }

    /** The grid of a single rank: every group is {@code [0]}. */
    public static RankGrid single() {
        return create(1, 1, 1, 1, 1);
    }

    public int worldSize() {
        return worldSize;
    }

    /** Tensor-parallel size. */
    public int tp() {
        return tp;
    }

    /** Pipeline-parallel size. */
    public int pp() {
        return pp;
    }

    /** Context-parallel size. */
    public int cp() {
        return cp;
    }

    /** Expert-parallel size. */
    public int ep() {
        return ep;
    }

    /** Data-parallel size of the dense layers: {@code worldSize / (tp * pp * cp)}. */
    public int dp() {
        return dp;
    }

    /** Data-parallel size of the expert layers: {@code worldSize / (tp * ep * pp)}. */
    public int expertDp() {
        return expertDp;
    }

    /** Rank of {@code globalRank} inside its tensor-parallel group. */
    public int tpRank(int globalRank) {
        return dense.coordinate(checkRank(globalRank), Dim.TP);
    }

    /** Pipeline stage of {@code globalRank}. */
    public int ppRank(int globalRank) {
        return dense.coordinate(checkRank(globalRank), Dim.PP);
    }

    /** Rank of {@code globalRank} inside its context-parallel group. */
    public int cpRank(int globalRank) {
        return dense.coordinate(checkRank(globalRank), Dim.CP);
    }

    /** Rank of {@code globalRank} inside its (dense) data-parallel group. */
    public int dpRank(int globalRank) {
        return dense.coordinate(checkRank(globalRank), Dim.DP);
    }

    /** Rank of {@code globalRank} inside its expert-parallel group. */
    public int epRank(int globalRank) {
        return expert.coordinate(checkRank(globalRank), Dim.EP);
    }

    /** Every group of {@code kind}, each listing global ranks in group-rank order (copies). */
    public List<int[]> groups(GroupKind kind) {
        List<int[]> all = groups.get(Objects.requireNonNull(kind, "kind"));
        List<int[]> copy = new ArrayList<>(all.size());
        for (int[] g : all) {
            copy.add(g.clone());
        }
        return Collections.unmodifiableList(copy);
    }

    /** The group of {@code kind} containing {@code globalRank}, in group-rank order (a copy). */
    public int[] group(GroupKind kind, int globalRank) {
        int index = groupOfRank.get(Objects.requireNonNull(kind, "kind"))[checkRank(globalRank)];
        return groups.get(kind).get(index).clone();
    }

    /**
     * Checks that a model can be sharded on this grid.
     *
     * @param numHeads attention heads ({@code num_attention_heads})
     * @param numKvHeads key/value heads, i.e. query groups ({@code num_key_value_heads})
     * @param vocabSize vocabulary size (after any padding)
     * @param numExperts experts per MoE layer, 0 for a dense model
     * @throws IllegalArgumentException naming the first number that does not fit, and what to do
     */
    public void validateModel(int numHeads, int numKvHeads, int vocabSize, int numExperts) {
        requirePositive("number of attention heads (num_attention_heads)", numHeads);
        requirePositive("number of key/value heads (num_key_value_heads)", numKvHeads);
        requirePositive("vocabulary size (vocab_size)", vocabSize);
        if (numExperts < 0) {
            throw new IllegalArgumentException(
                    "number of experts (num_experts) must be >= 0, got " + numExperts);
        }
        if (numHeads % numKvHeads != 0) {
            throw new IllegalArgumentException(String.format(
                    "the %d attention heads (num_attention_heads) are not a multiple of the %d"
                            + " key/value heads (num_key_value_heads)",
                    numHeads, numKvHeads));
        }
        if (numHeads % tp != 0) {
            throw new IllegalArgumentException(String.format(
                    "tensor-parallel size %d does not divide the %d attention heads"
                            + " (num_attention_heads); use a TP size that divides %d",
                    tp, numHeads, numHeads));
        }
        if (numKvHeads % tp != 0) {
            throw new IllegalArgumentException(String.format(
                    "tensor-parallel size %d does not divide the %d key/value heads"
                            + " (num_key_value_heads); use a TP size that divides %d",
                    tp, numKvHeads, numKvHeads));
        }
        if (vocabSize % tp != 0) {
            throw new IllegalArgumentException(String.format(
                    "tensor-parallel size %d does not divide the vocabulary size %d (vocab_size);"
                            + " pad the vocabulary to a multiple of %d",
                    tp, vocabSize, tp));
        }
        if (numExperts == 0 && ep > 1) {
            throw new IllegalArgumentException(String.format(
                    "expert-parallel size %d needs an MoE model, but the model has no experts"
                            + " (num_experts = 0); use ep = 1",
                    ep));
        }
        if (numExperts > 0 && numExperts % ep != 0) {
            throw new IllegalArgumentException(String.format(
                    "expert-parallel size %d does not divide the %d experts (num_experts);"
                            + " use an EP size that divides %d",
                    ep, numExperts, numExperts));
        }
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof RankGrid g
                && worldSize == g.worldSize && tp == g.tp && pp == g.pp && cp == g.cp && ep == g.ep;
    }

    @Override
    public int hashCode() {
        return Objects.hash(worldSize, tp, pp, cp, ep);
    }

    @Override
    public String toString() {
        return String.format(
                "RankGrid[world=%d, tp=%d, pp=%d, cp=%d, ep=%d, dp=%d]", worldSize, tp, pp, cp, ep, dp);
    }

    private void put(GroupKind kind, List<int[]> kindGroups) {
        int[] index = new int[worldSize];
        for (int g = 0; g < kindGroups.size(); g++) {
            for (int rank : kindGroups.get(g)) {
                index[rank] = g;
            }
        }
        groups.put(kind, kindGroups);
        groupOfRank.put(kind, index);
    }

    private int checkRank(int globalRank) {
        if (globalRank < 0 || globalRank >= worldSize) {
            throw new IllegalArgumentException(
                    "global rank " + globalRank + " is outside the world of " + worldSize + " ranks");
        }
        return globalRank;
    }

    private static void requirePositive(String what, int value) {
        if (value < 1) {
            throw new IllegalArgumentException(what + " must be >= 1, got " + value);
        }
    }
}
