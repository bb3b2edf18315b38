package org.djlmegatron.io.torch;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.djlmegatron.io.SafetensorsDType;
import org.junit.jupiter.api.Test;

/** The data-only pickle reader: round trips with the writer, and what it refuses. */
class PickleTest {

    private static Object load(byte[] pickle) {
        return PickleReader.load(pickle, "test.pkl", PickleAllowList.TORCH, null);
    }

    @Test
    void roundTripsEveryValueKind() {
        Map<Object, Object> dict = new LinkedHashMap<>();
        dict.put("none", null);
        dict.put("flags", PyTuple.of(true, false));
        List<Object> ints = new ArrayList<>(List.of(0L, 255L, 256L, 65535L, 65536L, -1L, (long) Integer.MIN_VALUE,
                Long.MAX_VALUE, Long.MIN_VALUE));
        dict.put("ints", ints);
        dict.put("floats", List.of(3.0, -0.0, 1e-300));
        dict.put("text", "héllo, 世界");
        dict.put("tuples", List.of(PyTuple.of(), PyTuple.of(1L), PyTuple.of(1L, 2L), PyTuple.of(1L, 2L, 3L),
                PyTuple.of(1L, 2L, 3L, 4L)));
        dict.put("size", TorchSize.of(2, 128, 64));
        dict.put("dtype", TorchTypes.dtypeConstant(SafetensorsDType.BF16));
        Map<String, Object> args = new LinkedHashMap<>();
        args.put("num_layers", 2L);
        args.put("params_dtype", TorchTypes.dtypeConstant(SafetensorsDType.F32));
        dict.put("args", PyObject.withFields("argparse.Namespace", args));
        dict.put("enum", PyObject.called("megatron.core.enums.ModelType", 1L));
        List<Object> many = new ArrayList<>();
        for (long i = 0; i < 2500; i++) {
            many.add(i);
        }
        dict.put("batched", many);
        assertThat(load(PickleWriter.write(dict))).isEqualTo(dict);
    }

    @Test
    void readsProtocol4OpcodesAndLargeIntegers() {
        // protocol 4: FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, BINGET; LONG1 of 9 bytes
        byte[] p = {(byte) 0x80, 4, (byte) 0x95, 0, 0, 0, 0, 0, 0, 0, 0, (byte) 0x8c, 5, 't', 'o', 'r', 'c', 'h',
            (byte) 0x94, (byte) 0x8c, 4, 'S', 'i', 'z', 'e', (byte) 0x94, (byte) 0x93, (byte) 0x94, 'K', 7,
            (byte) 0x85, (byte) 0x85, 'R', (byte) 0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1, (byte) 0x86, '.'};
        PyTuple t = (PyTuple) load(p);
        assertThat(t.get(0)).isEqualTo(TorchSize.of(7));
        assertThat(t.get(1)).isEqualTo(BigInteger.ONE.shiftLeft(64));
    }

    @Test
    void refusesOsSystemNamingTheGlobal() {
        byte[] evil = "\u0080\u0002cos\nsystem\nX\u0002\u0000\u0000\u0000ls\u0085R.".getBytes(StandardCharsets.ISO_8859_1);
        assertThatThrownBy(() -> load(evil)).isInstanceOf(TorchFormatException.class)
                .hasMessageContaining("test.pkl").hasMessageContaining("'os.system'")
                .hasMessageContaining("not on the allow-list");
    }

    @Test
    void refusesAnyGlobalOutsideTheList() {
        byte[] p = "\u0080\u0002cbuiltins\neval\n.".getBytes(StandardCharsets.ISO_8859_1);
        assertThatThrownBy(() -> load(p)).hasMessageContaining("'builtins.eval'");
        byte[] stack = {(byte) 0x80, 4, (byte) 0x8c, 10, 's', 'u', 'b', 'p', 'r', 'o', 'c', 'e', 's', 's',
            (byte) 0x8c, 5, 'P', 'o', 'p', 'e', 'n', (byte) 0x93, '.'};
        assertThatThrownBy(() -> load(stack)).hasMessageContaining("'subprocess.Popen'");
    }

    @Test
    void refusesCallingAValueOnlyGlobalAndInstOpcodes() {
        byte[] call = "\u0080\u0002ctorch\nfloat32\n)R.".getBytes(StandardCharsets.ISO_8859_1);
        assertThatThrownBy(() -> load(call)).hasMessageContaining("torch.float32").hasMessageContaining("as a value");
        byte[] inst = "(ios\nsystem\n.".getBytes(StandardCharsets.ISO_8859_1);
        assertThatThrownBy(() -> load(inst)).hasMessageContaining("INST");
    }

    @Test
    void allowListHoldsOnlyDataReconstructions() {
        // growing this list is a deliberate decision: each entry is reconstructed as data, never run
        assertThat(PickleAllowList.TORCH.names()).hasSize(46)
                .contains("torch._utils._rebuild_tensor_v2", "torch.FloatStorage", "torch.bfloat16", "torch.Size",
                        "collections.OrderedDict", "argparse.Namespace", "io.BytesIO", "_codecs.encode",
                        "torch.distributed.checkpoint.metadata.Metadata",
                        "torch.distributed.checkpoint.filesystem._StorageInfo")
                .noneMatch(n -> n.startsWith("os.") || n.startsWith("subprocess.") || n.equals("builtins.eval")
                        || n.equals("builtins.exec") || n.equals("builtins.getattr"));
    }

    @Test
    void truncatedPickleIsAnError() {
        byte[] whole = PickleWriter.write(Map.of("a", List.of(1L, 2L)));
        byte[] cut = java.util.Arrays.copyOf(whole, whole.length - 3);
        assertThatThrownBy(() -> load(cut)).isInstanceOf(TorchFormatException.class).hasMessageContaining("test.pkl");
    }
}
