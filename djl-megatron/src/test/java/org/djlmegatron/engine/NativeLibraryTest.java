package org.djlmegatron.engine;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.engine.Engine;
import ai.djl.engine.EngineException;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import ai.djl.pytorch.jni.LibUtils;
import java.io.IOException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The JVM runs on the project's libdjl_torch.so: loaded from build/native, complete, errors as exceptions. */
@Tag("native")
class NativeLibraryTest {

    /** The libtorch release the library was built against (the -Pnative profile passes it). */
    static final String LIBTORCH = System.getProperty("djlm.native.libtorch", "1.13.1");

    private NDManager manager;

    @BeforeEach
    void open() {
        manager = NDManager.newBaseManager();
    }

    @AfterEach
    void close() {
        manager.close();
    }

    @Test
    void djlRunsOnTheProjectLibrary() throws IOException {
        assertThat(TorchNative.isAvailable())
                .as("TorchNative natives present: DJL loaded build/native/libdjl_torch.so, not its stock JNI")
                .isTrue();
        assertThat(TorchNative.version()).startsWith("djl-megatron native ").contains("libtorch " + LIBTORCH);
        String dir = System.getProperty("djlm.native.dir");
        if (dir != null) {
            assertThat(Paths.get(LibUtils.getLibtorchPath()).toRealPath()).isEqualTo(Paths.get(dir).toRealPath());
        }
        assertThat(Engine.getEngine("PyTorch").getVersion()).isEqualTo(LIBTORCH);
    }

    /** Every native of DJL's PyTorchLibrary and of TorchNative is exported (JNI resolves them lazily). */
    @Test
    void exportsEveryNative() throws Exception {
        Path lib = Paths.get(LibUtils.getLibtorchPath(), "libdjl_torch.so");
        Process nm = new ProcessBuilder("nm", "-D", "--defined-only", lib.toString()).redirectErrorStream(true).start();
        Set<String> exported = Arrays.stream(new String(nm.getInputStream().readAllBytes(), StandardCharsets.UTF_8)
                        .split("\\s+"))
                .filter(s -> s.startsWith("Java_"))
                .collect(Collectors.toSet());
        assertThat(nm.waitFor()).isZero();

        List<String> expected = new ArrayList<>();
        expected.addAll(jniNames(Class.forName("ai.djl.pytorch.jni.PyTorchLibrary")));
        expected.addAll(jniNames(TorchNative.class));
        assertThat(expected).hasSize(265 + 18); // DJL's and ours (TorchNative: 18)
        Set<String> missing = new TreeSet<>(expected);
        missing.removeAll(exported);
        assertThat(missing).as("natives missing from " + lib).isEmpty();
    }

    @Test
    void libtorchErrorsBecomeEngineExceptionsNamingTheNative() {
        NDArray a = manager.ones(new Shape(2, 3));
        NDArray b = manager.ones(new Shape(2, 3));
        assertThatThrownBy(() -> a.matMul(b)).isInstanceOf(EngineException.class).hasMessageStartingWith("torchMatmul: ");
    }

    /** DJL's own JNI dereferences the missing grad_fn and kills the JVM. */
    @Test
    void gradFnOfALeafIsAnEngineException() {
        NDArray leaf = manager.ones(new Shape(2));
        assertThatThrownBy(() -> JniUtils.getGradientFunctionNames((PtNDArray) leaf))
                .isInstanceOf(EngineException.class)
                .hasMessageStartingWith("torchGradFnName: ");
    }

    /** Unsigned 16/32/64-bit dtypes exist from libtorch 2.3; before, the native says so. */
    @Test
    void unsignedWideDtypesNeedLibtorch23() {
        String[] v = LIBTORCH.split("\\.");
        boolean supported = Integer.parseInt(v[0]) > 2 || (Integer.parseInt(v[0]) == 2 && Integer.parseInt(v[1]) >= 3);
        for (DataType type : new DataType[] {DataType.UINT16, DataType.UINT32, DataType.UINT64}) {
            if (supported) {
                try (NDArray z = manager.zeros(new Shape(3), type)) {
                    assertThat(z.getDataType()).isEqualTo(type);
                }
            } else {
                assertThatThrownBy(() -> manager.zeros(new Shape(3), type))
                        .isInstanceOf(EngineException.class)
                        .hasMessageStartingWith("torchZeros: DataType " + type.name() + " needs libtorch >= 2.3");
            }
        }
    }

    @Test
    void profilerWritesAChromeTrace(@TempDir Path dir) throws IOException {
        Path trace = dir.resolve("trace.json");
        JniUtils.startProfile(false, false, false);
        manager.ones(new Shape(4, 4)).matMul(manager.ones(new Shape(4, 4)));
        JniUtils.stopProfile(trace.toString());
        String json = Files.readString(trace);
        assertThat(json.trim()).startsWith("[").endsWith("]").contains("\"name\": \"aten::matmul\"");
    }

    /** JNI symbol names; overloaded natives carry their mangled argument signature. */
    static List<String> jniNames(Class<?> c) {
        List<Method> natives = Arrays.stream(c.getDeclaredMethods())
                .filter(m -> Modifier.isNative(m.getModifiers()))
                .collect(Collectors.toList());
        Map<String, Integer> counts = new HashMap<>();
        natives.forEach(m -> counts.merge(m.getName(), 1, Integer::sum));
        String prefix = "Java_" + c.getName().replace('.', '_') + "_";
        List<String> out = new ArrayList<>();
        for (Method m : natives) {
            String name = prefix + m.getName();
            if (counts.get(m.getName()) > 1) {
                StringBuilder sig = new StringBuilder();
                for (Class<?> p : m.getParameterTypes()) {
                    sig.append(descriptor(p));
                }
                name += "__" + sig.toString().replace("/", "_").replace(";", "_2").replace("[", "_3");
            }
            out.add(name);
        }
        return out;
    }

    static String descriptor(Class<?> c) {
        if (c.isArray()) {
            return "[" + descriptor(c.getComponentType());
        }
        if (!c.isPrimitive()) {
            return "L" + c.getName().replace('.', '/') + ";";
        }
        return Map.of(long.class, "J", int.class, "I", boolean.class, "Z", double.class, "D", float.class, "F",
                        byte.class, "B", short.class, "S", char.class, "C")
                .get(c);
    }
}
