package org.djlmegatron.io;

import ai.djl.ndarray.types.DataType;

import java.util.Arrays;
import java.util.stream.Collectors;

/**
 * The safetensors element types this package reads, with their on-disk size and the DJL type
 * they load as.
 *
 * <p>{@link #BF16} loads widened to {@link DataType#FLOAT32} and {@link #I16} widened to {@link
 * DataType#INT32}: DJL's stock PyTorch JNI maps only the first nine {@link DataType} ordinals and
 * aborts the JVM on BFLOAT16 or INT16, so those arrays must never be created.
 */
public enum SafetensorsDType {
    F64("F64", 8, DataType.FLOAT64),
    F32("F32", 4, DataType.FLOAT32),
    F16("F16", 2, DataType.FLOAT16),
    BF16("BF16", 2, DataType.FLOAT32),
    I64("I64", 8, DataType.INT64),
    I32("I32", 4, DataType.INT32),
    I16("I16", 2, DataType.INT32),
    I8("I8", 1, DataType.INT8),
    U8("U8", 1, DataType.UINT8),
    BOOL("BOOL", 1, DataType.BOOLEAN);

    private final String code;
    private final int elementSize;
    private final DataType loadType;

    SafetensorsDType(String code, int elementSize, DataType loadType) {
        this.code = code;
        this.elementSize = elementSize;
        this.loadType = loadType;
    }

    /** The dtype string used in the safetensors header, e.g. {@code "BF16"}. */
    public String code() {
        return code;
    }

    /** Bytes per element on disk. */
    public int elementSize() {
        return elementSize;
    }

    /** The DJL type {@link SafetensorsReader#load} returns for this dtype. */
    public DataType loadType() {
        return loadType;
    }

    /** Whether loading converts each element to a wider type (BF16, I16). */
    public boolean isWidened() {
        return loadType.getNumOfBytes() != elementSize;
    }

    /**
     * Looks up a header dtype string.
     *
     * @return the dtype, or {@code null} when the code is not one this package supports
     */
    public static SafetensorsDType fromCode(String code) {
        for (SafetensorsDType d : values()) {
            if (d.code.equals(code)) {
                return d;
            }
        }
        return null;
    }

    /**
     * The dtype a DJL array of the given type is written as. Only types whose values round-trip
     * through {@link #loadType()} are accepted: all unchanged but BFLOAT16 (arrays exist only on the
     * project's native library), which loads widened to FLOAT32, exactly.
     *
     * @return the dtype, or {@code null} when the type cannot be written
     */
    public static SafetensorsDType forWriting(DataType type) {
        return switch (type) {
            case FLOAT64 -> F64;
            case FLOAT32 -> F32;
            case FLOAT16 -> F16;
            case BFLOAT16 -> BF16;
            case INT64 -> I64;
            case INT32 -> I32;
            case INT8 -> I8;
            case UINT8 -> U8;
            case BOOLEAN -> BOOL;
            default -> null;
        };
    }

    /** The supported codes, comma separated, for error messages. */
    static String supportedCodes() {
        return Arrays.stream(values()).map(SafetensorsDType::code).collect(Collectors.joining(", "));
    }
}
