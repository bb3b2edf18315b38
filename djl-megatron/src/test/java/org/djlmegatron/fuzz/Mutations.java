package org.djlmegatron.fuzz;

import java.util.Arrays;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;

/** Bad inputs made from a good one: bytes overwritten, cut short, cut out, grown; and plain noise. */
public final class Mutations {

    private Mutations() {}

    /**
     * Variants of {@code seed} whose changes fall in {@code [from, to)} (the structure worth
     * damaging: headers, directories), plus random bytes up to {@code maxNoise} long.
     */
    public static Arbitrary<byte[]> of(byte[] seed, int from, int to, int maxNoise) {
        Arbitrary<Integer> at = Arbitraries.integers().between(from, Math.max(from, to - 1));
        Arbitrary<byte[]> overwritten = Combinators.combine(at, Arbitraries.bytes().array(byte[].class).ofMinSize(1).ofMaxSize(8))
                .as((pos, bytes) -> {
                    byte[] b = seed.clone();
                    for (int i = 0; i < bytes.length && pos + i < b.length; i++) {
                        b[pos + i] = bytes[i];
                    }
                    return b;
                });
        Arbitrary<byte[]> special = Combinators.combine(at, Arbitraries.of((byte) 0, (byte) 0xFF, (byte) 0x7F, (byte) 0x80))
                .as((pos, value) -> {
                    byte[] b = seed.clone();
                    Arrays.fill(b, pos, Math.min(b.length, pos + 8), value);
                    return b;
                });
        Arbitrary<byte[]> truncated = Arbitraries.integers().between(0, seed.length).map(n -> Arrays.copyOf(seed, n));
        Arbitrary<byte[]> cutOut = Combinators.combine(at, Arbitraries.integers().between(1, 64)).as((pos, len) -> {
            int end = Math.min(seed.length, pos + len);
            byte[] b = new byte[seed.length - (end - pos)];
            System.arraycopy(seed, 0, b, 0, pos);
            System.arraycopy(seed, end, b, pos, seed.length - end);
            return b;
        });
        Arbitrary<byte[]> noise = Arbitraries.bytes().array(byte[].class).ofMaxSize(maxNoise);
        return Arbitraries.frequencyOf(
                net.jqwik.api.Tuple.of(4, overwritten), net.jqwik.api.Tuple.of(2, special),
                net.jqwik.api.Tuple.of(2, truncated), net.jqwik.api.Tuple.of(1, cutOut), net.jqwik.api.Tuple.of(1, noise));
    }
}
