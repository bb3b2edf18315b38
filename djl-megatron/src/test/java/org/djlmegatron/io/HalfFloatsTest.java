package org.djlmegatron.io;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/** Narrowing rounds to nearest even like PyTorch; widening and narrowing back is the identity. */
class HalfFloatsTest {

    private static short bf16(float f) {
        return HalfFloats.floatToBf16(f);
    }

    @Test
    void bf16RoundsToNearestEven() {
        assertThat(bf16(1.0f)).isEqualTo((short) 0x3F80);
        assertThat(bf16(Float.intBitsToFloat(0x3F808000))).isEqualTo((short) 0x3F80); // tie, even stays
        assertThat(bf16(Float.intBitsToFloat(0x3F818000))).isEqualTo((short) 0x3F82); // tie, odd rounds up
        assertThat(bf16(Float.intBitsToFloat(0x3F808001))).isEqualTo((short) 0x3F81); // above the tie
        assertThat(bf16(-2.5f)).isEqualTo((short) 0xC020);
        assertThat(bf16(Float.MAX_VALUE)).isEqualTo((short) 0x7F80); // rounds up to infinity
        assertThat(bf16(Float.NEGATIVE_INFINITY)).isEqualTo((short) 0xFF80);
        short nan = bf16(Float.intBitsToFloat(0x7F800001)); // a signalling NaN whose payload is all low bits
        assertThat(Float.isNaN(Float.intBitsToFloat((nan & 0xFFFF) << 16))).isTrue();
    }

    @Test
    void halfRoundsToNearestEvenIncludingSubnormalsAndOverflow() {
        assertThat(HalfFloats.floatToHalf(1.0f)).isEqualTo((short) 0x3C00);
        assertThat(HalfFloats.floatToHalf(65504f)).isEqualTo((short) 0x7BFF);
        assertThat(HalfFloats.floatToHalf(65520f)).isEqualTo((short) 0x7C00); // tie between max and 2^16: even is inf
        assertThat(HalfFloats.floatToHalf(0x1p-24f)).isEqualTo((short) 0x0001);
        assertThat(HalfFloats.floatToHalf(0x1p-25f)).isEqualTo((short) 0x0000); // tie to even zero
        assertThat(HalfFloats.floatToHalf(0x1.8p-24f)).isEqualTo((short) 0x0002); // 1.5 ulp rounds to 2
        assertThat(HalfFloats.floatToHalf(1 + 0x1p-11f)).isEqualTo((short) 0x3C00); // tie, even
        assertThat(HalfFloats.floatToHalf(1 + 0x1.8p-10f)).isEqualTo((short) 0x3C02); // tie, odd rounds up
        assertThat(HalfFloats.floatToHalf(-0.0f)).isEqualTo((short) 0x8000);
        assertThat(HalfFloats.floatToBf16(1 + 0x1p-8f)).isEqualTo((short) 0x3f80); // tie, even below
        assertThat(HalfFloats.floatToBf16(1 + 3 * 0x1p-8f)).isEqualTo((short) 0x3f82); // tie, even above
    }

    @Test
    void everyHalfAndBf16ValueSurvivesWideningAndNarrowing() {
        for (int bits = 0; bits < 0x10000; bits++) {
            float h = HalfFloats.halfToFloat((short) bits);
            if (!Float.isNaN(h)) {
                assertThat(HalfFloats.floatToHalf(h) & 0xFFFF).as("half %04x", bits).isEqualTo(bits);
            }
            float b = HalfFloats.bf16ToFloat((short) bits);
            if (!Float.isNaN(b)) {
                assertThat(HalfFloats.floatToBf16(b) & 0xFFFF).as("bf16 %04x", bits).isEqualTo(bits);
            }
        }
    }
}
