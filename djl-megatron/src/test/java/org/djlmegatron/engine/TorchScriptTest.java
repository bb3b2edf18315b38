package org.djlmegatron.engine;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Parameter;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.engine.PtNDManager;
import ai.djl.pytorch.engine.PtSymbolBlock;
import ai.djl.pytorch.jni.IValue;
import ai.djl.pytorch.jni.IValueUtils;
import ai.djl.training.ParameterStore;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * TorchScript through DJL's PtModel/PtSymbolBlock/IValue on the project's library. The fixture
 * {@code engine/affine.pt} was scripted with libtorch 1.13.1 ({@code torch::jit::Module::define}, then
 * {@code save}): parameters {@code weight = [[1, 2], [3, 4]]}, {@code bias = [0.5, -0.5]} and the methods
 *
 * <pre>
 * def forward(self, x):
 *     return x.matmul(self.weight.t()) + self.bias
 * def scale(self, x, factor: float):
 *     return x * factor
 * def describe(self, xs: List[Tensor], names: Dict[str, Tensor]):
 *     return (len(xs), [n for n in names.keys()], [1.5, 2.5])
 * </pre>
 */
@Tag("native")
class TorchScriptTest {

    static final float[] X = {1, -1, 2, 0.5f};
    /** X W^T + b. */
    static final float[] Y = {-0.5f, -1.5f, 3.5f, 7.5f};

    static Path fixtureDir() throws Exception {
        return Paths.get(TorchScriptTest.class.getResource("/engine/affine.pt").toURI()).getParent();
    }

    @Test
    void runsForwardAndOtherMethodsWithIValues() throws Exception {
        try (Model model = Model.newInstance("affine", Device.cpu(), "PyTorch")) {
            model.load(fixtureDir(), "affine");
            PtSymbolBlock block = (PtSymbolBlock) model.getBlock();
            NDManager m = model.getNDManager();
            NDArray x = m.create(X, new Shape(2, 2));

            NDList out = block.forward(new ParameterStore(m, false), new NDList(x), false);
            assertThat(out.singletonOrThrow().toFloatArray()).containsExactly(Y);

            List<String> names = block.getDirectParameters().values().stream()
                    .map(Parameter::getName)
                    .collect(Collectors.toList());
            assertThat(names).containsExactly("weight", "bias");
            assertThat(block.getDirectParameters().get("weight").getArray().toFloatArray()).containsExactly(1, 2, 3, 4);

            try (IValue input = IValue.from((PtNDArray) x);
                    IValue factor = IValue.from(2.0);
                    IValue scaled = IValueUtils.runMethod(block, "scale", input, factor)) {
                assertThat(scaled.isTensor()).isTrue();
                assertThat(scaled.toTensor((PtNDManager) m).toFloatArray()).containsExactly(2, -2, 4, 1);
            }

            try (IValue xs = IValue.listFrom((PtNDArray) x, (PtNDArray) x);
                    IValue named = IValue.stringMapFrom(Map.of("alpha", (PtNDArray) x));
                    IValue result = IValueUtils.runMethod(block, "describe", xs, named)) {
                assertThat(xs.isTensorList()).isTrue();
                assertThat(named.isMap()).isTrue();
                assertThat(result.isTuple()).isTrue();
                assertThat(result.getType()).contains("int", "str", "float"); // libtorch's own rendering
                IValue[] parts = result.toIValueTuple();
                assertThat(parts[0].toLong()).isEqualTo(2);
                assertThat(parts[1].isList()).isTrue();
                assertThat(parts[1].toIValueArray()[0].toStringValue()).isEqualTo("alpha");
                assertThat(parts[2].isDoubleList()).isTrue();
                assertThat(parts[2].toDoubleArray()).containsExactly(1.5, 2.5);
                for (IValue p : parts) {
                    p.close();
                }
            }
        }
    }

    /** mapLocation loads straight onto the device; trainParam makes the parameters trainable. */
    @Test
    void loadOptions() throws Exception {
        try (Model model = Model.newInstance("affine", Device.cpu(), "PyTorch")) {
            model.load(fixtureDir(), "affine", Map.of("mapLocation", "true", "trainParam", "true"));
            PtSymbolBlock block = (PtSymbolBlock) model.getBlock();
            for (Parameter p : block.getDirectParameters().values()) {
                assertThat(p.getArray().hasGradient()).as(p.getName()).isTrue();
            }
            NDArray x = model.getNDManager().create(X, new Shape(2, 2));
            NDList out = block.forward(new ParameterStore(model.getNDManager(), false), new NDList(x), false);
            assertThat(out.singletonOrThrow().toFloatArray()).containsExactly(Y);
        }
    }

    /** saveParameters writes the module through a Java stream; loadParameters reads it back. */
    @Test
    void modulesRoundTripThroughJavaStreams() throws Exception {
        try (Model model = Model.newInstance("affine", Device.cpu(), "PyTorch")) {
            model.load(fixtureDir(), "affine");
            PtSymbolBlock block = (PtSymbolBlock) model.getBlock();
            ByteArrayOutputStream bytes = new ByteArrayOutputStream();
            block.saveParameters(new DataOutputStream(bytes));

            NDManager m = model.getNDManager();
            try (PtSymbolBlock copy = new PtSymbolBlock((PtNDManager) m)) {
                copy.loadParameters(m, new DataInputStream(new ByteArrayInputStream(bytes.toByteArray())));
                NDArray x = m.create(X, new Shape(2, 2));
                NDList out = copy.forward(new ParameterStore(m, false), new NDList(x), false);
                assertThat(out.singletonOrThrow().toFloatArray()).containsExactly(Y);
            }
        }
    }
}
