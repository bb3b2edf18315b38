package org.djlmegatron.data;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;

/** Draw-for-draw agreement with numpy 2.4's {@code RandomState} (values printed by numpy). */
class NumpyRandomStateTest {

    @Test
    void rawOutputsMatchMt19937() {
        // the reference MT19937 first output for init_genrand(5489)
        assertThat(new NumpyRandomState(5489).nextUint32()).isEqualTo(3499211612L);
        NumpyRandomState r = new NumpyRandomState(1234); // randint(0, 2**32, dtype=uint64) x3
        assertThat(new long[] {r.nextUint32(), r.nextUint32(), r.nextUint32()})
                .containsExactly(822569775L, 2137449171L, 2671936806L);
    }

    @Test
    void shuffleMatchesNumpy() {
        assertThat(shuffled(1234, 10)).containsExactly(7, 2, 9, 1, 0, 8, 4, 5, 6, 3);
        assertThat(shuffled(0, 5)).containsExactly(2, 0, 1, 3, 4);
        assertThat(shuffled(4294967295L, 20))
                .containsExactly(11, 17, 19, 15, 1, 5, 8, 16, 13, 18, 14, 9, 10, 6, 0, 4, 7, 12, 2, 3);
    }

    @Test
    void shufflingARangeLeavesTheRestAlone() {
        int[] a = IntStream.range(0, 12).toArray();
        new NumpyRandomState(1234).shuffle(a, 1, 11);
        assertThat(a[0]).isZero();
        assertThat(a[11]).isEqualTo(11);
        assertThat(a).containsExactlyInAnyOrder(IntStream.range(0, 12).toArray());
        // numpy's shuffle of a slice draws exactly as a shuffle of a 10-element array
        int[] expected = shuffled(1234, 10);
        for (int i = 0; i < 10; i++) {
            assertThat(a[1 + i]).isEqualTo(1 + expected[i]);
        }
    }

    private static int[] shuffled(long seed, int n) {
        int[] a = IntStream.range(0, n).toArray();
        new NumpyRandomState(seed).shuffle(a, 0, n);
        return a;
    }
}
