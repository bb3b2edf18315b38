package org.djlmegatron.data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code --data-path} blends, {@code --split}, and the train/valid/test builder. */
class BlendAndSplitTest {

    @TempDir
    Path tmp;

    @Test
    void parsesDataPathLikeMegatron() {
        DataBlend weighted = DataBlend.parse(List.of("30", "a", "70", "b"));
        assertThat(weighted.prefixes()).containsExactly(Path.of("a"), Path.of("b"));
        assertThat(weighted.weights()).containsExactly(0.3, 0.7);
        DataBlend plain = DataBlend.parse(List.of("a", "b"));
        assertThat(plain.prefixes()).containsExactly(Path.of("a"), Path.of("b"));
        assertThat(plain.weights()).isNull();
        assertThat(DataBlend.parse(List.of("a")).weights()).isNull();
        assertThat(DataBlend.parse(List.of("3", "a", "1", "b", "2", "c")).weights())
                .containsExactly(0.5, 0.16666666666666666, 0.3333333333333333);
        assertThatThrownBy(() -> DataBlend.parse(List.of("0.3", "a", "b", "c")))
                .hasMessageContaining("mixes weights and prefixes");
        assertThatThrownBy(() -> DataBlend.parse(List.of("0", "a", "0", "b"))).hasMessageContaining("sum to 0.0");
    }

    @Test
    void numpySumIsPairwise() {
        // numpy.sum([1.0] + [1e-16] * 19) == 1.0000000000000016: the small terms meet in 8
        // accumulators before the 1.0; a sequential sum would lose each one and give 1.0
        double[] w = new double[20];
        Arrays.fill(w, 1e-16);
        w[0] = 1.0;
        assertThat(DataBlend.numpySum(w, 0, w.length)).isEqualTo(1.0000000000000016);
    }

    @Test
    void splitsSequencesWithPythonsRounding() {
        SplitMatrix s = SplitMatrix.parse("949,50,1");
        assertThat(new int[] {s.begin(Split.TRAIN, 1000), s.end(Split.TRAIN, 1000), s.end(Split.VALID, 1000),
                s.end(Split.TEST, 1000)}).containsExactly(0, 949, 999, 1000);
        // 0.5 * 5 = 2.5 rounds to even: 2
        SplitMatrix half = SplitMatrix.parse("1,1");
        assertThat(half.end(Split.TRAIN, 5)).isEqualTo(2);
        assertThat(half.has(Split.TEST)).isFalse();
        assertThatThrownBy(() -> SplitMatrix.parse("1,2,3,4")).hasMessageContaining("expected 1 to 3 numbers");
    }

    @Test
    void blendsByLargestLagInWeight() {
        SampleDataset a = new Counting(10, 0);
        SampleDataset b = new Counting(10, 1000);
        BlendedDataset blend = BlendedDataset.of(List.of(a, b), new double[] {0.3, 0.7}, 10);
        // worked by hand: sample s goes to argmax(weight * max(s, 1) - taken)
        long[] firsts = new long[10];
        for (int i = 0; i < 10; i++) {
            firsts[i] = blend.sample(i)[0];
        }
        assertThat(firsts).containsExactly(1000, 0, 1001, 1002, 1, 1003, 1004, 2, 1005, 1006);
        assertThatThrownBy(() -> BlendedDataset.of(List.of(a, new Counting(2, 1000)), new double[] {0.3, 0.7}, 10))
                .hasMessageContaining("blend takes 7 samples from dataset 1");
    }

    @Test
    void exhaustiveBlendUsesEverySampleOnce() {
        BlendedDataset blend = BlendedDataset.exhaustive(List.of(new Counting(2, 0), new Counting(3, 1000)));
        long[] firsts = new long[blend.size()];
        for (int i = 0; i < firsts.length; i++) {
            firsts[i] = blend.sample(i)[0];
        }
        assertThat(firsts).containsExactly(1000, 0, 1001, 1, 1002);
    }

    @Test
    void buildsSplitsOfOneDatasetAndOfAWeightedBlend() throws IOException {
        int[] lengths = new int[100];
        Arrays.fill(lengths, 10);
        Path a = DataFixtures.writeDocuments(tmp.resolve("a"), lengths);
        Path b = DataFixtures.writeDocuments(tmp.resolve("b"), lengths);
        GPTDatasetConfig config = new GPTDatasetConfig(9, 1234, null);
        try (DatasetSplits one = DatasetSplits.build(DataBlend.parse(List.of(a.toString())), SplitMatrix.parse("90,10"),
                new Integer[] {null, null, null}, config)) {
            GPTDataset train = (GPTDataset) one.train().orElseThrow();
            GPTDataset valid = (GPTDataset) one.valid().orElseThrow();
            assertThat(new int[] {train.begin(), train.end(), valid.begin(), valid.end()}).containsExactly(0, 90, 90, 100);
            assertThat(train.size()).isEqualTo((900 - 1) / 9);
            assertThat(one.test()).isEmpty();
        }
        try (DatasetSplits blend = DatasetSplits.build(DataBlend.parse(List.of("30", a.toString(), "70", b.toString())),
                SplitMatrix.parse("90,10"), new Integer[] {100, 20, null}, config)) {
            BlendedDataset train = (BlendedDataset) blend.train().orElseThrow();
            // per dataset ceil(ceil(100 w) * 1.005) samples are built, ceil(100 w) are blended
            assertThat(train.size()).isEqualTo(100);
            assertThat(train.datasets().get(0).size()).isGreaterThanOrEqualTo(31);
            int fromA = 0;
            for (int i = 0; i < train.size(); i++) {
                fromA += train.datasetOf(i) == 0 ? 1 : 0;
            }
            assertThat(fromA).isEqualTo(30);
            assertThat(blend.valid().orElseThrow().size()).isEqualTo(20);
        }
        assertThatThrownBy(() -> DatasetSplits.build(DataBlend.parse(List.of("30", a.toString(), "70", b.toString())),
                SplitMatrix.parse("90,10"), new Integer[] {100, null, null}, config))
                .hasMessageContaining("needs a sample count for the valid split");
    }

    /** {@code size} samples of 3 tokens; sample i starts at {@code base + i}. */
    private record Counting(int size, long base) implements SampleDataset {
        @Override
        public int sequenceLength() {
            return 2;
        }

        @Override
        public long[] sample(int index) {
            return new long[] {base + index, 0, 0};
        }
    }
}
