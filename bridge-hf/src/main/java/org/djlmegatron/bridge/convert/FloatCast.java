package org.djlmegatron.bridge.convert;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.djlmegatron.io.HalfFloats;
import org.djlmegatron.io.SafetensorsDType;

/**
 * Conversions between the floating-point storage types on raw little-endian bytes. Narrowing
 * rounds to nearest, ties to even, as PyTorch's {@code tensor.to(dtype)} does; NaN stays NaN
 * (quiet), overflow becomes infinity. Widening is exact (element conversions: {@link HalfFloats}).
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
                case F16 -> HalfFloats.halfToFloat(in.getShort(2 * i));
                case BF16 -> HalfFloats.bf16ToFloat(in.getShort(2 * i));
                default -> (float) in.getDouble(8 * i);
            };
            switch (to) {
                case F32 -> out.putFloat(v);
                case F16 -> out.putShort(HalfFloats.floatToHalf(v));
                case BF16 -> out.putShort(HalfFloats.floatToBf16(v));
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
}
