package org.djlmegatron.data;

/**
 * The token types of Megatron's MMIDIDX format, with the one-byte codes its {@code .idx} header
 * stores ({@code DType} in Megatron-LM's {@code indexed_dataset.py}).
 *
 * <p>Codes 6 (float64) and 7 (float32) exist in the format but never hold tokens, so they are
 * refused like unknown codes.
 */
public enum TokenDType {
    UINT8(1, 1),
    INT8(2, 1),
    INT16(3, 2),
    INT32(4, 4),
    INT64(5, 8),
    UINT16(8, 2);

    /** Megatron switches from uint16 to int32 tokens at this vocabulary size, not at 65536. */
    public static final int UINT16_VOCAB_LIMIT = 65500;

    private final int code;
    private final int size;

    TokenDType(int code, int size) {
        this.code = code;
        this.size = size;
    }

    /** The code written in the {@code .idx} header. */
    public int code() {
        return code;
    }

    /** Bytes per token in the {@code .bin} file. */
    public int size() {
        return size;
    }

    /** Megatron's {@code DType.optimal_dtype}: uint16 below 65500 tokens, else int32. */
    public static TokenDType optimalFor(int vocabSize) {
        return vocabSize < UINT16_VOCAB_LIMIT ? UINT16 : INT32;
    }

    /**
     * The type of a header code.
     *
     * @throws InvalidDataException for float codes and unknown codes, naming {@code source}
     */
    public static TokenDType fromCode(int code, String source) {
        for (TokenDType t : values()) {
            if (t.code == code) {
                return t;
            }
        }
        String what = code == 6 ? " (float64, not a token type)" : code == 7 ? " (float32, not a token type)" : "";
        throw new InvalidDataException(source + ": dtype code " + code + what
                + " is not a token dtype; expected one of 1 (uint8), 2 (int8), 3 (int16), 4 (int32), 5 (int64), 8 (uint16)");
    }

    /** Whether {@code token} is representable, so a writer never wraps a token silently. */
    boolean holds(long token) {
        return switch (this) {
            case UINT8 -> token >= 0 && token <= 0xFF;
            case INT8 -> token >= Byte.MIN_VALUE && token <= Byte.MAX_VALUE;
            case INT16 -> token >= Short.MIN_VALUE && token <= Short.MAX_VALUE;
            case UINT16 -> token >= 0 && token <= 0xFFFF;
            case INT32 -> token >= Integer.MIN_VALUE && token <= Integer.MAX_VALUE;
            case INT64 -> true;
        };
    }
}
