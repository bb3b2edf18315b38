package org.djlmegatron.parallel;

import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;

/**
 * Global ranks laid out as a mixed-radix number over the parallel dimensions, first dimension
 * fastest (Megatron-Core's {@code RankGenerator} with order "tp-cp-ep-dp-pp"). A group of a set
 * of dimensions holds the ranks that differ only in those dimensions; inside a group, ranks
 * are ordered by the same mixed-radix rule restricted to the chosen dimensions.
 */
final class RankLayout {

    /** The parallel dimensions in Megatron-Core's default order, fastest-varying first. */
    enum Dim {
        TP,
        CP,
        EP,
        DP,
        PP
    }

    private final int[] sizes = new int[Dim.values().length];
    private final int[] strides = new int[Dim.values().length];
    private final int worldSize;

    RankLayout(int tp, int cp, int ep, int dp, int pp) {
        sizes[Dim.TP.ordinal()] = tp;
        sizes[Dim.CP.ordinal()] = cp;
        sizes[Dim.EP.ordinal()] = ep;
        sizes[Dim.DP.ordinal()] = dp;
        sizes[Dim.PP.ordinal()] = pp;
        int stride = 1;
        for (Dim d : Dim.values()) {
            strides[d.ordinal()] = stride;
            stride *= sizes[d.ordinal()];
        }
        worldSize = stride;
    }

    /** The coordinate of {@code rank} along {@code dim}. */
    int coordinate(int rank, Dim dim) {
        return rank / strides[dim.ordinal()] % sizes[dim.ordinal()];
    }

    /** Every group spanning {@code dims}, in Megatron's group order, each in group-rank order. */
    List<int[]> groups(Set<Dim> dims) {
        EnumSet<Dim> in = EnumSet.copyOf(dims); // enum order = Megatron's order, whatever the caller's set
        List<Dim> inside = new ArrayList<>(in);
        List<Dim> outside = new ArrayList<>(EnumSet.complementOf(in));
        int groupSize = product(inside);
        int numGroups = worldSize / groupSize;
        List<int[]> groups = new ArrayList<>(numGroups);
        for (int g = 0; g < numGroups; g++) {
            int base = offset(g, outside);
            int[] ranks = new int[groupSize];
            for (int i = 0; i < groupSize; i++) {
                ranks[i] = base + offset(i, inside);
            }
            groups.add(ranks);
        }
        return groups;
    }

    /** Decomposes {@code index} over {@code dims} (first fastest) and maps it to a global offset. */
    private int offset(int index, List<Dim> dims) {
        int offset = 0;
        for (Dim d : dims) {
            int size = sizes[d.ordinal()];
            offset += (index % size) * strides[d.ordinal()];
            index /= size;
        }
        return offset;
    }

    private int product(List<Dim> dims) {
        int p = 1;
        for (Dim d : dims) {
            p *= sizes[d.ordinal()];
        }
        return p;
    }
}
