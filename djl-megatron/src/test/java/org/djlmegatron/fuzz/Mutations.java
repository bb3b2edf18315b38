package org.djlmegatron.fuzz;

import java.util.Arrays;
import java.util.List;
import java.util.Random;

/**
 * Bad inputs made from a good one: bytes overwritten, cut short, cut out, grown; and plain noise.
 * All drawn from a seeded {@link Random}, so a failing input is reproducible from the seed and
 * its index (see {@link #random} and {@link #where}).
 */
public final class Mutations {

    /** The seed of the robustness tests; {@code -Dfuzz.seed=N} explores others. */
    public static final long SEED = Long.getLong("fuzz.seed", 0x5EED_DA7AL);

    private static final byte[] SPECIAL = {(byte) 0, (byte) 0xFF, (byte) 0x7F, (byte) 0x80};

    private Mutations() {}

    /** The generator of input {@code index} of a test run with {@code seed}: independent of the other inputs. */
    public static Random random(long seed, int index) {
        return new Random(seed * 0x9E3779B97F4A7C15L + index);
    }

    /** How a failure names its input: enough to reproduce it. */
    public static String where(long seed, int index) {
        return "seed " + seed + " (-Dfuzz.seed=" + seed + "), input #" + index;
    }

    /**
     * One variant of {@code seed} whose change falls in {@code [from, to)} (the structure worth
     * damaging: headers, directories), or random bytes up to {@code maxNoise} long. Weights: 4
     * overwritten bytes, 2 a run of a special byte (0, 0xFF, 0x7F, 0x80), 2 truncated, 1 cut out,
     * 1 noise.
     */
    public static byte[] sample(byte[] seed, int from, int to, int maxNoise, Random rnd) {
        int k = rnd.nextInt(10);
        if (k < 4) {
            int pos = at(from, to, rnd);
            byte[] bytes = bytes(1, 8, rnd);
            byte[] b = seed.clone();
            for (int i = 0; i < bytes.length && pos + i < b.length; i++) {
                b[pos + i] = bytes[i];
            }
            return b;
        } else if (k < 6) {
            int pos = at(from, to, rnd);
            byte value = SPECIAL[rnd.nextInt(SPECIAL.length)];
            byte[] b = seed.clone();
            if (pos < b.length) {
                Arrays.fill(b, pos, Math.min(b.length, pos + 8), value);
            }
            return b;
        } else if (k < 8) {
            return Arrays.copyOf(seed, rnd.nextInt(seed.length + 1));
        } else if (k < 9) {
            int pos = Math.min(at(from, to, rnd), seed.length);
            int end = Math.min(seed.length, pos + 1 + rnd.nextInt(64));
            byte[] b = new byte[seed.length - (end - pos)];
            System.arraycopy(seed, 0, b, 0, pos);
            System.arraycopy(seed, end, b, pos, seed.length - end);
            return b;
        } else {
            return bytes(0, maxNoise, rnd);
        }
    }

    /** Random bytes, {@code min} to {@code max} of them. */
    public static byte[] bytes(int min, int max, Random rnd) {
        byte[] b = new byte[min + rnd.nextInt(max - min + 1)];
        rnd.nextBytes(b);
        return b;
    }

    /** One of {@code choices}, uniformly. */
    public static <T> T oneOf(List<T> choices, Random rnd) {
        return choices.get(rnd.nextInt(choices.size()));
    }

    private static int at(int from, int to, Random rnd) {
        return from + rnd.nextInt(Math.max(1, to - from));
    }
}
