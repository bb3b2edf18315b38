package org.djlmegatron.bridge.convert;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.djlmegatron.io.SafetensorsDType;

/**
 * Conversions between the floating-point storage types on raw little-endian bytes. Narrowing
 * rounds to nearest, ties to even, as PyTorch's {@code tensor.to(dtype)} does; NaN stays NaN
 * (quiet), overflow becomes infinity. Widening is exact. Java 17 has no float16 conversions and
 * DJL's stock engine no bfloat16, so they are done here bit by bit.
 */
public final class FloatCast {

    private FloatCast() {}

    /** Converts a buffer of {@code from} elements to {@code to} elements. */
    public static byte[] convert(byte[] data, SafetensorsDType from, SafetensorsDType to) {
        if (from == to) {
            return data;
        }
        checkFloat(from);
        checkFloat(to);
        int n = data.length / from.elementSize();
        ByteBuffer in = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN);
        ByteBuffer out = ByteBuffer.allocate(n * to.elementSize()).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < n; i++) {
            float v = switch (from) {
                case F32 -> in.getFloat(4 * i);
                case F16 -> halfToFloat(in.getShort(2 * i));
                case BF16 -> Float.intBitsToFloat((in.getShort(2 * i) & 0xFFFF) << 16);
                default -> (float) in.getDouble(8 * i);
            };
            switch (to) {
                case F32 -> out.putFloat(v);
                case F16 -> out.putShort(floatToHalf(v));
                case BF16 -> out.putShort(floatToBf16(v));
                default -> out.putDouble(v);
            }
        }
        return out.array();
    }

    private static void checkFloat(SafetensorsDType d) {
        if (d != SafetensorsDType.F32 && d != SafetensorsDType.F16 && d != SafetensorsDType.BF16
                && d != SafetensorsDType.F64) {
            throw new IllegalArgumentException("cannot convert " + d.code() + ": not a floating-point type");
        }
    }

    /** bfloat16 bits of a float, rounded to nearest even. */
    public static short floatToBf16(float f) {
        int bits = Float.floatToRawIntBits(f);
        if (Float.isNaN(f)) {
            return (short) ((bits >>> 16) | 0x40); // keep sign and payload top, force quiet
        }
        int lsb = (bits >>> 16) & 1;
        return (short) ((bits + 0x7FFF + lsb) >>> 16);
    }

    /** IEEE binary16 bits of a float, rounded to nearest even. */
    public static short floatToHalf(float f) {
        int bits = Float.floatToRawIntBits(f);
        int sign = (bits >>> 16) & 0x8000;
        int exp = (bits >>> 23) & 0xFF;
        int mant = bits & 0x7FFFFF;
        if (exp == 0xFF) {
            return (short) (sign | 0x7C00 | (mant != 0 ? 0x200 | (mant >>> 13) : 0));
        }
        int e = exp - 127 + 15;
        if (e >= 0x1F) {
            return (short) (sign | 0x7C00); // overflow
        }
        if (e <= 0) {
            if (e < -10) {
                return (short) sign; // underflows to zero even after rounding
            }
            int m = mant | 0x800000; // subnormal: shift the implicit bit in
            int shift = 14 - e;
            int half = m >>> shift;
            int rest = m & ((1 << shift) - 1);
            int mid = 1 << (shift - 1);
            if (rest > mid || (rest == mid && (half & 1) != 0)) {
                half++;
            }
            return (short) (sign | half);
        }
        int half = (e << 10) | (mant >>> 13);
        int rest = mant & 0x1FFF;
        if (rest > 0x1000 || (rest == 0x1000 && (half & 1) != 0)) {
            half++; // may carry into the exponent, up to infinity: correct rounding
        }
        return (short) (sign | half);
    }

    /** float of IEEE binary16 bits (exact). */
    public static float halfToFloat(short h) {
        int bits = h & 0xFFFF;
        int sign = (bits & 0x8000) << 16;
        int exp = (bits >>> 10) & 0x1F;
        int mant = bits & 0x3FF;
        if (exp == 0x1F) {
            return Float.intBitsToFloat(sign | 0x7F800000 | (mant << 13));
        }
        if (exp == 0) {
            float v = mant * 0x1p-24f;
            return sign != 0 ? -v : v;
        }
        return Float.intBitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
    }
}
