package org.djlmegatron.data;

/**
 * The parts of numpy's legacy {@code numpy.random.RandomState(seed)} that Megatron's dataset
 * indices use, reproduced draw for draw so shuffles equal Megatron's: the MT19937 generator
 * seeded by {@code init_genrand(seed)}, and {@code shuffle}, which is Fisher-Yates from the last
 * element down with {@code random_interval} (rejection sampling of a masked 32-bit draw).
 *
 * <p>Arrays here are Java arrays, so bounds stay below 2^31 and numpy's 64-bit draw path (for
 * bounds above 2^32 - 1) is never needed. Not thread-safe, like numpy's.
 */
public final class NumpyRandomState {

    private static final int N = 624;
    private static final int M = 397;

    private final int[] mt = new int[N];
    private int index;

    /** {@code RandomState(seed)} for a seed in [0, 2^32). */
    public NumpyRandomState(long seed) {
        if (seed < 0 || seed > 0xFFFFFFFFL) {
            throw new IllegalArgumentException("seed must be between 0 and 2**32 - 1, found " + seed);
        }
        mt[0] = (int) seed;
        for (int i = 1; i < N; i++) {
            mt[i] = 1812433253 * (mt[i - 1] ^ (mt[i - 1] >>> 30)) + i;
        }
        index = N;
    }

    /** The next 32-bit output, unsigned in a long. */
    public long nextUint32() {
        if (index >= N) {
            twist();
        }
        int y = mt[index++];
        y ^= y >>> 11;
        y ^= (y << 7) & 0x9D2C5680;
        y ^= (y << 15) & 0xEFC60000;
        y ^= y >>> 18;
        return y & 0xFFFFFFFFL;
    }

    /** numpy's {@code random_interval(max)}: uniform in [0, max] by masking and rejection. */
    public int interval(int max) {
        if (max < 0) {
            throw new IllegalArgumentException("max must be >= 0, found " + max);
        }
        if (max == 0) {
            return 0;
        }
        long mask = max;
        mask |= mask >>> 1;
        mask |= mask >>> 2;
        mask |= mask >>> 4;
        mask |= mask >>> 8;
        mask |= mask >>> 16;
        long value;
        do {
            value = nextUint32() & mask;
        } while (value > max);
        return (int) value;
    }

    /** {@code shuffle(a[from:to])} in place, as numpy shuffles a 1-D array. */
    public void shuffle(int[] a, int from, int to) {
        for (int i = to - from - 1; i > 0; i--) {
            int j = interval(i);
            int t = a[from + i];
            a[from + i] = a[from + j];
            a[from + j] = t;
        }
    }

    private void twist() {
        for (int k = 0; k < N; k++) {
            int y = (mt[k] & 0x80000000) | (mt[(k + 1) % N] & 0x7FFFFFFF);
            mt[k] = mt[(k + M) % N] ^ (y >>> 1) ^ ((y & 1) != 0 ? 0x9908B0DF : 0);
        }
        index = 0;
    }
}
