package org.djlmegatron.io.torch;

import java.util.Map;
import org.djlmegatron.io.SafetensorsDType;

/**
 * PyTorch's names for element types: the typed storage classes {@code torch.save} names in its
 * persistent ids ({@code torch.FloatStorage}) and the dtype constants distributed checkpoints
 * record ({@code torch.float32}), both mapped to {@link SafetensorsDType}.
 */
public final class TorchTypes {

    private static final Map<SafetensorsDType, String> STORAGE = Map.of(
            SafetensorsDType.F64, "DoubleStorage",
            SafetensorsDType.F32, "FloatStorage",
            SafetensorsDType.F16, "HalfStorage",
            SafetensorsDType.BF16, "BFloat16Storage",
            SafetensorsDType.I64, "LongStorage",
            SafetensorsDType.I32, "IntStorage",
            SafetensorsDType.I16, "ShortStorage",
            SafetensorsDType.I8, "CharStorage",
            SafetensorsDType.U8, "ByteStorage",
            SafetensorsDType.BOOL, "BoolStorage");

    private static final Map<SafetensorsDType, String> DTYPE = Map.of(
            SafetensorsDType.F64, "float64",
            SafetensorsDType.F32, "float32",
            SafetensorsDType.F16, "float16",
            SafetensorsDType.BF16, "bfloat16",
            SafetensorsDType.I64, "int64",
            SafetensorsDType.I32, "int32",
            SafetensorsDType.I16, "int16",
            SafetensorsDType.I8, "int8",
            SafetensorsDType.U8, "uint8",
            SafetensorsDType.BOOL, "bool");

    private TorchTypes() {}

    /** {@code torch.FloatStorage} for F32, and so on. */
    public static PyGlobal storageClass(SafetensorsDType dtype) {
        return new PyGlobal("torch", STORAGE.get(dtype));
    }

    /** {@code torch.float32} for F32, and so on. */
    public static PyGlobal dtypeConstant(SafetensorsDType dtype) {
        return new PyGlobal("torch", DTYPE.get(dtype));
    }

    /** The element type of a storage class name ({@code FloatStorage}), or null. */
    static SafetensorsDType ofStorageClass(String name) {
        return find(STORAGE, name);
    }

    /** The element type of a dtype constant name ({@code float32}), or null. */
    public static SafetensorsDType ofDtypeConstant(String name) {
        return find(DTYPE, name);
    }

    private static SafetensorsDType find(Map<SafetensorsDType, String> map, String name) {
        for (Map.Entry<SafetensorsDType, String> e : map.entrySet()) {
            if (e.getValue().equals(name)) {
                return e.getKey();
            }
        }
        return null;
    }
}
