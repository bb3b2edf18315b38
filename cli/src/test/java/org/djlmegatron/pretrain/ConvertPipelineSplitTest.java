package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;
import org.djlmegatron.bridge.convert.SafetensorsRawReader;
import org.djlmegatron.cli.Main;
import org.djlmegatron.io.torch.FileSlice;
import org.djlmegatron.io.torch.PyObject;
import org.djlmegatron.io.torch.TorchArchive;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code convert --to megatron} writes interleaved and uneven pipeline splits as Megatron's
 * {@code save_checkpoint} does: per stage file, {@code model0}, {@code model1}, ... per virtual
 * stage with layers numbered from 0 in each chunk (chunk c of stage r is virtual stage c p + r),
 * or per-stage layer counts with the split in {@code args}; reading them back gives every tensor
 * bit for bit. The model is a 4-layer one trained here (the fixtures have 2 layers).
 */
class ConvertPipelineSplitTest {

    @TempDir
    Path tmp;

    @Test
    void virtualAndUnevenSplitsAsMegatronWritesThem() throws IOException {
        Path trained = tmp.resolve("trained");
        TrajectoryParity.run(TrajectoryParity.args("--mock-data", "--num-layers", "4", "--hidden-size", "32",
                "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128", "--micro-batch-size", "1",
                "--global-batch-size", "1", "--lr", "3e-3", "--seed", "3", "--untie-embeddings-and-output-weights",
                "--train-iters", "1", "--save", trained.toString()), TrajectoryParity.SINGLE);

        Path vp = convert(trained, "vp", "--to", "megatron", "--pp", "2", "--vp", "2");
        Map<Object, Object> stage0 = root(vp.resolve("iter_0000001/mp_rank_00_000/model_optim_rng.pt"));
        Map<Object, Object> stage1 = root(vp.resolve("iter_0000001/mp_rank_00_001/model_optim_rng.pt"));
        assertThat(stage0).containsKeys("model0", "model1").doesNotContainKey("model");
        assertThat(layers(stage0.get("model0"))).containsExactly("0"); // global layer 0
        assertThat(layers(stage0.get("model1"))).containsExactly("0"); // global layer 2
        assertThat(dict(stage0.get("model0"))).containsKey("embedding.word_embeddings.weight");
        assertThat(dict(stage0.get("model1"))).doesNotContainKey("embedding.word_embeddings.weight");
        assertThat(dict(stage1.get("model1"))).containsKeys("decoder.final_layernorm.weight", "output_layer.weight");
        assertThat(dict(stage1.get("model0"))).doesNotContainKey("output_layer.weight");
        Map<Object, Object> args = ((PyObject) stage0.get("args")).fields();
        assertThat(args.get("virtual_pipeline_model_parallel_size")).isEqualTo(2L);
        assertThat(args.get("num_layers_per_virtual_pipeline_stage")).isEqualTo(1L);

        Path uneven = convert(trained, "uneven", "--to", "megatron", "--pp", "2", "--decoder-first-pipeline-num-layers", "1");
        Map<Object, Object> first = root(uneven.resolve("iter_0000001/mp_rank_00_000/model_optim_rng.pt"));
        Map<Object, Object> last = root(uneven.resolve("iter_0000001/mp_rank_00_001/model_optim_rng.pt"));
        assertThat(layers(first.get("model"))).containsExactly("0");
        assertThat(layers(last.get("model"))).containsExactly("0", "1", "2");
        Map<Object, Object> unevenArgs = ((PyObject) first.get("args")).fields();
        assertThat(unevenArgs.get("decoder_first_pipeline_num_layers")).isEqualTo(1L);
        assertThat(unevenArgs.get("decoder_last_pipeline_num_layers")).isEqualTo(3L);

        // both read back (the reader renumbers from the files' contents) to the trained tensors, bit for bit
        Path weights = trained.resolve("iter_0000001/mp_rank_00/model.safetensors");
        for (Path megatron : List.of(vp, uneven)) {
            Path back = convert(megatron, megatron.getFileName() + "-djl", "--to", "djl");
            assertSameTensors(back.resolve("iter_0000001/mp_rank_00/model.safetensors"), weights);
        }
        // and the djl format records the split: uneven djl output -> megatron at PP 1 gives them again
        Path djlUneven = convert(trained, "djl-uneven", "--to", "djl", "--pp", "2", "--decoder-last-pipeline-num-layers", "1");
        Path again = convert(djlUneven, "again", "--to", "djl");
        assertSameTensors(again.resolve("iter_0000001/mp_rank_00/model.safetensors"), weights);
    }

    private Path convert(Path in, String name, String... more) {
        Path out = tmp.resolve(name);
        String[] args = new String[more.length + 5];
        System.arraycopy(new String[] {"convert", "--input", in.toString(), "--output", out.toString()}, 0, args, 0, 5);
        System.arraycopy(more, 0, args, 5, more.length);
        assertThat(Main.run(args)).as(String.join(" ", args)).isZero();
        return out;
    }

    private static Map<Object, Object> root(Path file) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            return dict(TorchArchive.open(new FileSlice(file, ch, 0, ch.size())).root());
        }
    }

    @SuppressWarnings("unchecked")
    private static Map<Object, Object> dict(Object o) {
        return (Map<Object, Object>) o;
    }

    /** The layer numbers a model state dict holds, sorted. */
    private static Set<String> layers(Object model) {
        return dict(model).keySet().stream().map(String::valueOf).filter(k -> k.startsWith("decoder.layers."))
                .map(k -> k.split("\\.")[2]).collect(Collectors.toCollection(java.util.TreeSet::new));
    }

    private static void assertSameTensors(Path actual, Path expected) {
        try (SafetensorsRawReader a = SafetensorsRawReader.open(actual);
                SafetensorsRawReader e = SafetensorsRawReader.open(expected)) {
            assertThat(a.keys()).containsExactlyInAnyOrderElementsOf(e.keys());
            for (String key : e.keys()) {
                assertThat(a.read(key, null).data()).as(key).isEqualTo(e.read(key, null).data());
            }
        }
    }
}
