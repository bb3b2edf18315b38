package org.djlmegatron.parallel;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

class RankGridTest {

    /** Groups as nested lists, for readable assertions. */
    private static List<List<Integer>> groups(RankGrid grid, GroupKind kind) {
        return grid.groups(kind).stream()
                .map(g -> Arrays.stream(g).boxed().collect(Collectors.toList()))
                .collect(Collectors.toList());
    }

    private static List<List<Integer>> lists(int[]... groups) {
        List<List<Integer>> out = new ArrayList<>();
        for (int[] g : groups) {
            out.add(Arrays.stream(g).boxed().collect(Collectors.toList()));
        }
        return out;
    }

    @Test
    void megatronDocstringExample() {
        // initialize_model_parallel's docstring: 16 GPUs, tp 2, pp 4
        RankGrid grid = RankGrid.create(16, 2, 4, 1, 1);
        assertThat(grid.dp()).isEqualTo(2);
        assertThat(groups(grid, GroupKind.TENSOR)).isEqualTo(lists(
                new int[] {0, 1}, new int[] {2, 3}, new int[] {4, 5}, new int[] {6, 7},
                new int[] {8, 9}, new int[] {10, 11}, new int[] {12, 13}, new int[] {14, 15}));
        assertThat(groups(grid, GroupKind.PIPELINE)).isEqualTo(lists(
                new int[] {0, 4, 8, 12}, new int[] {1, 5, 9, 13},
                new int[] {2, 6, 10, 14}, new int[] {3, 7, 11, 15}));
        assertThat(groups(grid, GroupKind.DATA)).isEqualTo(lists(
                new int[] {0, 2}, new int[] {1, 3}, new int[] {4, 6}, new int[] {5, 7},
                new int[] {8, 10}, new int[] {9, 11}, new int[] {12, 14}, new int[] {13, 15}));
        // tp-pp: tp fastest, then pp; one group per data-parallel replica
        assertThat(groups(grid, GroupKind.MODEL)).isEqualTo(lists(
                new int[] {0, 1, 4, 5, 8, 9, 12, 13}, new int[] {2, 3, 6, 7, 10, 11, 14, 15}));
        // cp = 1: context groups are singletons, dp-cp equals dp
        assertThat(grid.groups(GroupKind.CONTEXT)).hasSize(16).allSatisfy(g -> assertThat(g).hasSize(1));
        assertThat(groups(grid, GroupKind.DATA_CONTEXT)).isEqualTo(groups(grid, GroupKind.DATA));
        assertThat(grid.toString()).isEqualTo("RankGrid[world=16, tp=2, pp=4, cp=1, ep=1, dp=2]");
    }

    @Test
    void contextParallelSitsBetweenTensorAndData() {
        // order tp-cp-ep-dp-pp: strides tp 1, cp 2, dp 4
        RankGrid grid = RankGrid.create(8, 2, 1, 2, 1);
        assertThat(grid.dp()).isEqualTo(2);
        assertThat(groups(grid, GroupKind.TENSOR)).isEqualTo(lists(
                new int[] {0, 1}, new int[] {2, 3}, new int[] {4, 5}, new int[] {6, 7}));
        assertThat(groups(grid, GroupKind.CONTEXT)).isEqualTo(lists(
                new int[] {0, 2}, new int[] {1, 3}, new int[] {4, 6}, new int[] {5, 7}));
        assertThat(groups(grid, GroupKind.DATA)).isEqualTo(lists(
                new int[] {0, 4}, new int[] {1, 5}, new int[] {2, 6}, new int[] {3, 7}));
        assertThat(groups(grid, GroupKind.DATA_CONTEXT)).isEqualTo(lists(
                new int[] {0, 2, 4, 6}, new int[] {1, 3, 5, 7}));
        assertThat(groups(grid, GroupKind.MODEL)).isEqualTo(lists(
                new int[] {0, 1}, new int[] {2, 3}, new int[] {4, 5}, new int[] {6, 7}));
    }

    @Test
    void contextAndPipeline() {
        // strides tp 1, cp 2, dp 4, pp 8
        RankGrid grid = RankGrid.create(16, 2, 2, 2, 1);
        assertThat(grid.dp()).isEqualTo(2);
        assertThat(groups(grid, GroupKind.PIPELINE)).isEqualTo(lists(
                new int[] {0, 8}, new int[] {1, 9}, new int[] {2, 10}, new int[] {3, 11},
                new int[] {4, 12}, new int[] {5, 13}, new int[] {6, 14}, new int[] {7, 15}));
        assertThat(groups(grid, GroupKind.DATA)).isEqualTo(lists(
                new int[] {0, 4}, new int[] {1, 5}, new int[] {2, 6}, new int[] {3, 7},
                new int[] {8, 12}, new int[] {9, 13}, new int[] {10, 14}, new int[] {11, 15}));
        assertThat(groups(grid, GroupKind.CONTEXT).get(5)).containsExactly(9, 11);
        assertThat(groups(grid, GroupKind.MODEL)).isEqualTo(lists(
                new int[] {0, 1, 8, 9}, new int[] {2, 3, 10, 11},
                new int[] {4, 5, 12, 13}, new int[] {6, 7, 14, 15}));
        assertThat(grid.cpRank(11)).isEqualTo(1);
        assertThat(grid.dpRank(13)).isEqualTo(1);
        assertThat(grid.ppRank(13)).isEqualTo(1);
        assertThat(grid.tpRank(13)).isEqualTo(1);
    }

    @Test
    void expertGroupsUseTheirOwnLayout() {
        // dense: tp 2, dp 4; experts: etp 2, ep 2, edp 8/(2*2*1) = 2, strides tp 1, ep 2, edp 4
        RankGrid grid = RankGrid.create(8, 2, 1, 1, 2);
        assertThat(grid.dp()).isEqualTo(4);
        assertThat(grid.expertDp()).isEqualTo(2);
        assertThat(groups(grid, GroupKind.DATA)).isEqualTo(lists(
                new int[] {0, 2, 4, 6}, new int[] {1, 3, 5, 7}));
        assertThat(groups(grid, GroupKind.EXPERT)).isEqualTo(lists(
                new int[] {0, 2}, new int[] {1, 3}, new int[] {4, 6}, new int[] {5, 7}));
        assertThat(groups(grid, GroupKind.EXPERT_DATA)).isEqualTo(lists(
                new int[] {0, 4}, new int[] {1, 5}, new int[] {2, 6}, new int[] {3, 7}));
        assertThat(grid.epRank(6)).isEqualTo(1);
        assertThat(grid.epRank(4)).isEqualTo(0);
    }

    @Test
    void expertWithPipeline() {
        // experts: etp 1, ep 4, edp 16/(1*4*2) = 2, pp 2; strides ep 1, edp 4, pp 8
        RankGrid grid = RankGrid.create(16, 1, 2, 1, 4);
        assertThat(grid.dp()).isEqualTo(8);
        assertThat(grid.expertDp()).isEqualTo(2);
        assertThat(groups(grid, GroupKind.EXPERT)).isEqualTo(lists(
                new int[] {0, 1, 2, 3}, new int[] {4, 5, 6, 7},
                new int[] {8, 9, 10, 11}, new int[] {12, 13, 14, 15}));
        assertThat(groups(grid, GroupKind.EXPERT_DATA)).isEqualTo(lists(
                new int[] {0, 4}, new int[] {1, 5}, new int[] {2, 6}, new int[] {3, 7},
                new int[] {8, 12}, new int[] {9, 13}, new int[] {10, 14}, new int[] {11, 15}));
        assertThat(groups(grid, GroupKind.PIPELINE).get(0)).containsExactly(0, 8);
    }

    @Test
    void expertWithContext() {
        // dense: cp 2 (stride 1), dp 4 (stride 2); experts: ep 2 (stride 1), edp 4 (stride 2)
        RankGrid grid = RankGrid.create(8, 1, 1, 2, 2);
        assertThat(groups(grid, GroupKind.CONTEXT)).isEqualTo(lists(
                new int[] {0, 1}, new int[] {2, 3}, new int[] {4, 5}, new int[] {6, 7}));
        assertThat(groups(grid, GroupKind.DATA)).isEqualTo(lists(
                new int[] {0, 2, 4, 6}, new int[] {1, 3, 5, 7}));
        assertThat(groups(grid, GroupKind.EXPERT)).isEqualTo(lists(
                new int[] {0, 1}, new int[] {2, 3}, new int[] {4, 5}, new int[] {6, 7}));
        assertThat(groups(grid, GroupKind.EXPERT_DATA)).isEqualTo(lists(
                new int[] {0, 2, 4, 6}, new int[] {1, 3, 5, 7}));
    }

    @Test
    void singleRank() {
        RankGrid grid = RankGrid.single();
        assertThat(grid.worldSize()).isEqualTo(1);
        for (GroupKind kind : GroupKind.values()) {
            assertThat(groups(grid, kind)).isEqualTo(lists(new int[] {0}));
        }
        assertThat(grid.toString()).isEqualTo("RankGrid[world=1, tp=1, pp=1, cp=1, ep=1, dp=1]");
    }

    static Stream<Arguments> layouts() {
        return Stream.of(
                Arguments.of(1, 1, 1, 1, 1),
                Arguments.of(8, 2, 2, 1, 1),
                Arguments.of(8, 8, 1, 1, 1),
                Arguments.of(8, 1, 8, 1, 1),
                Arguments.of(12, 2, 3, 1, 1),
                Arguments.of(16, 2, 2, 2, 1),
                Arguments.of(16, 2, 2, 1, 4),
                Arguments.of(24, 2, 3, 2, 2),
                Arguments.of(32, 2, 2, 2, 4),
                Arguments.of(64, 4, 2, 2, 8));
    }

    @ParameterizedTest(name = "world {0}, tp {1}, pp {2}, cp {3}, ep {4}")
    @MethodSource("layouts")
    void everyRankIsInExactlyOneGroupOfEachKind(int world, int tp, int pp, int cp, int ep) {
        RankGrid grid = RankGrid.create(world, tp, pp, cp, ep);
        int dp = grid.dp();
        int[] expectedSize = new int[GroupKind.values().length];
        expectedSize[GroupKind.TENSOR.ordinal()] = tp;
        expectedSize[GroupKind.PIPELINE.ordinal()] = pp;
        expectedSize[GroupKind.DATA.ordinal()] = dp;
        expectedSize[GroupKind.CONTEXT.ordinal()] = cp;
        expectedSize[GroupKind.DATA_CONTEXT.ordinal()] = dp * cp;
        expectedSize[GroupKind.MODEL.ordinal()] = tp * pp;
        expectedSize[GroupKind.EXPERT.ordinal()] = ep;
        expectedSize[GroupKind.EXPERT_DATA.ordinal()] = grid.expertDp();
        expectedSize[GroupKind.DATA_CONTEXT_OVERLAP.ordinal()] = dp * cp;
        expectedSize[GroupKind.EXPERT_DATA_OVERLAP.ordinal()] = grid.expertDp();
        for (GroupKind kind : GroupKind.values()) {
            int[] seen = new int[world];
            for (int[] g : grid.groups(kind)) {
                assertThat(g).as("%s group size", kind).hasSize(expectedSize[kind.ordinal()]);
                for (int r : g) {
                    seen[r]++;
                }
            }
            assertThat(seen).as("%s membership", kind).containsOnly(1);
            for (int r = 0; r < world; r++) {
                assertThat(grid.group(kind, r)).as("%s group of %d", kind, r).contains(r);
            }
        }
    }

    @ParameterizedTest(name = "world {0}, tp {1}, pp {2}, cp {3}, ep {4}")
    @MethodSource("layouts")
    void coordinatesMatchGroups(int world, int tp, int pp, int cp, int ep) {
        RankGrid grid = RankGrid.create(world, tp, pp, cp, ep);
        for (int r = 0; r < world; r++) {
            assertThat(indexOf(grid.group(GroupKind.TENSOR, r), r)).isEqualTo(grid.tpRank(r));
            assertThat(indexOf(grid.group(GroupKind.PIPELINE, r), r)).isEqualTo(grid.ppRank(r));
            assertThat(indexOf(grid.group(GroupKind.CONTEXT, r), r)).isEqualTo(grid.cpRank(r));
            assertThat(indexOf(grid.group(GroupKind.DATA, r), r)).isEqualTo(grid.dpRank(r));
            assertThat(indexOf(grid.group(GroupKind.EXPERT, r), r)).isEqualTo(grid.epRank(r));
            // the mixed-radix layout, tensor fastest
            int rebuilt = grid.tpRank(r) + tp * (grid.cpRank(r) + cp * (grid.dpRank(r) + grid.dp() * grid.ppRank(r)));
            assertThat(rebuilt).isEqualTo(r);
            // a rank's pipeline stage is the same in the dense and the expert layout
            assertThat(r / (world / pp)).isEqualTo(grid.ppRank(r));
        }
        // tensor groups are consecutive ranks
        for (int[] g : grid.groups(GroupKind.TENSOR)) {
            for (int i = 1; i < g.length; i++) {
                assertThat(g[i]).isEqualTo(g[0] + i);
            }
        }
    }

    private static int indexOf(int[] group, int rank) {
        for (int i = 0; i < group.length; i++) {
            if (group[i] == rank) {
                return i;
            }
        }
        return -1;
    }

    @Test
    void returnedGroupsAreCopies() {
        RankGrid grid = RankGrid.create(4, 2, 1, 1, 1);
        grid.groups(GroupKind.TENSOR).get(0)[0] = 99;
        grid.group(GroupKind.TENSOR, 0)[0] = 99;
        assertThat(grid.group(GroupKind.TENSOR, 0)).containsExactly(0, 1);
        assertThatThrownBy(() -> grid.groups(GroupKind.TENSOR).clear())
                .isInstanceOf(UnsupportedOperationException.class);
    }

    @Test
    void valueSemantics() {
        assertThat(RankGrid.create(8, 2, 2, 1, 1)).isEqualTo(RankGrid.create(8, 2, 2, 1, 1));
        assertThat(RankGrid.create(8, 2, 2, 1, 1).hashCode()).isEqualTo(RankGrid.create(8, 2, 2, 1, 1).hashCode());
        assertThat(RankGrid.create(8, 2, 2, 1, 1)).isNotEqualTo(RankGrid.create(8, 2, 1, 1, 1));
    }

    @Test
    void rejectsSizesBelowOne() {
        assertThatThrownBy(() -> RankGrid.create(0, 1, 1, 1, 1))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("world size must be >= 1, got 0");
        assertThatThrownBy(() -> RankGrid.create(4, 0, 1, 1, 1))
                .hasMessageContaining("tensor-parallel size must be >= 1, got 0");
        assertThatThrownBy(() -> RankGrid.create(4, 1, -1, 1, 1))
                .hasMessageContaining("pipeline-parallel size must be >= 1, got -1");
        assertThatThrownBy(() -> RankGrid.create(4, 1, 1, 0, 1))
                .hasMessageContaining("context-parallel size must be >= 1, got 0");
        assertThatThrownBy(() -> RankGrid.create(4, 1, 1, 1, 0))
                .hasMessageContaining("expert-parallel size must be >= 1, got 0");
    }

    @Test
    void rejectsWorldNotDivisibleByModelSize() {
        assertThatThrownBy(() -> RankGrid.create(6, 2, 2, 1, 1))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("world size 6 is not divisible by tp*pp*cp = 2*2*1 = 4");
        assertThatThrownBy(() -> RankGrid.create(8, 4, 1, 4, 1))
                .hasMessageContaining("world size 8 is not divisible by tp*pp*cp = 4*1*4 = 16");
    }

    @Test
    void rejectsExpertLayoutThatDoesNotTile() {
        // dense layout fits (2*2*1 = 4 divides 8) but experts need 2*4*2 = 16
        assertThatThrownBy(() -> RankGrid.create(8, 2, 2, 1, 4))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("world size 8 is not divisible by the expert layout tp*ep*pp = 2*4*2 = 16");
        // 12 = tp 2 * dp 6, but tp*ep = 8 does not divide 12
        assertThatThrownBy(() -> RankGrid.create(12, 2, 1, 1, 4)).hasMessageContaining("expert layout");
    }

    @Test
    void rejectsOutOfRangeRanks() {
        RankGrid grid = RankGrid.create(4, 2, 1, 1, 1);
        assertThatThrownBy(() -> grid.tpRank(4)).hasMessageContaining("global rank 4 is outside the world of 4 ranks");
        assertThatThrownBy(() -> grid.group(GroupKind.DATA, -1)).isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void validateModelAcceptsFittingModels() {
        RankGrid.create(8, 4, 2, 1, 1).validateModel(32, 8, 32000, 0);
        RankGrid.create(8, 2, 1, 1, 4).validateModel(32, 8, 32000, 8);
        RankGrid.single().validateModel(12, 12, 50257, 0);
    }

    @Test
    void validateModelNamesTheNumberThatDoesNotFit() {
        RankGrid tp4 = RankGrid.create(8, 4, 2, 1, 1);
        assertThatThrownBy(() -> tp4.validateModel(8, 2, 32000, 0))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("tensor-parallel size 4 does not divide the 2 key/value heads"
                        + " (num_key_value_heads); use a TP size that divides 2");
        assertThatThrownBy(() -> tp4.validateModel(6, 6, 32000, 0))
                .hasMessage("tensor-parallel size 4 does not divide the 6 attention heads"
                        + " (num_attention_heads); use a TP size that divides 6");
        assertThatThrownBy(() -> tp4.validateModel(8, 8, 50257, 0))
                .hasMessageContaining("tensor-parallel size 4 does not divide the vocabulary size 50257")
                .hasMessageContaining("pad the vocabulary to a multiple of 4");
        assertThatThrownBy(() -> tp4.validateModel(8, 3, 32000, 0))
                .hasMessageContaining("8 attention heads (num_attention_heads) are not a multiple of the 3");
        assertThatThrownBy(() -> tp4.validateModel(0, 1, 32000, 0))
                .hasMessageContaining("num_attention_heads");

        RankGrid ep4 = RankGrid.create(8, 2, 1, 1, 4);
        assertThatThrownBy(() -> ep4.validateModel(8, 8, 32000, 6))
                .hasMessage("expert-parallel size 4 does not divide the 6 experts (num_experts);"
                        + " use an EP size that divides 6");
        assertThatThrownBy(() -> ep4.validateModel(8, 8, 32000, 0))
                .hasMessageContaining("expert-parallel size 4 needs an MoE model");
        assertThatThrownBy(() -> ep4.validateModel(8, 8, 32000, -1))
                .hasMessageContaining("must be >= 0, got -1");
    }
}
