package org.djlmegatron.cli;

import static org.djlmegatron.options.OptionChecks.positive;

import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.djlmegatron.bridge.CheckpointConverter;
import org.djlmegatron.bridge.CheckpointFormat;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.bridge.convert.ReadChecks;
import org.djlmegatron.bridge.convert.WeightSource;
import org.djlmegatron.bridge.export.HfWeightSink;
import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.pipeline.PipelineLayout;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code convert}: a checkpoint from one format to another, resharded, streaming. */
@Command(name = "convert", mixinStandardHelpOptions = true,
        description = "Convert a checkpoint between hf, megatron (torch), megatron-dist (torch_dist) and djl, "
                + "resharding TP/PP/EP; the input format is detected.")
final class ConvertCommand implements Callable<Integer> {

    @Option(names = "--input", required = true, description = "checkpoint directory to read")
    Path input;

    @Option(names = "--output", required = true, description = "directory to create (absent or empty)")
    Path output;

    @Option(names = "--to", required = true, description = "output format: hf, megatron, megatron-dist, djl")
    String to;

    @Option(names = "--from", description = "input format (default: detected)")
    String from;

    @Option(names = "--tp", defaultValue = "1", description = "tensor-parallel size of a megatron/djl output (default: ${DEFAULT-VALUE})")
    int tp;

    @Option(names = "--pp", defaultValue = "1", description = "pipeline-parallel size of a megatron/djl output (default: ${DEFAULT-VALUE})")
    int pp;

    @Option(names = {"--vp", "--virtual-pipeline-model-parallel-size"}, defaultValue = "1",
            description = "model chunks per pipeline stage of a megatron/djl output (interleaving; saved as model0, "
                    + "model1, ... in each megatron rank file) (default: ${DEFAULT-VALUE})")
    int vp;

    @Option(names = "--decoder-first-pipeline-num-layers",
            description = "layers on the first pipeline stage of a megatron/djl output (default: an even split)")
    Integer firstStageLayers;

    @Option(names = "--decoder-last-pipeline-num-layers",
            description = "layers on the last pipeline stage of a megatron/djl output (default: an even split)")
    Integer lastStageLayers;

    @Option(names = "--ep", defaultValue = "1", description = "expert-parallel size of a megatron/djl output (default: ${DEFAULT-VALUE})")
    int ep;

    @Option(names = "--dtype", description = "floating-point type of the output: fp32, fp16, bf16 (default: keep)")
    String dtype;

    @Option(names = "--model-config", description = "Megatron arguments as JSON, for a Megatron input without args")
    Path modelConfig;

    @Option(names = "--model-type", description = "architecture of an hf output (default: the input's, or inferred)")
    String modelType;

    @Option(names = "--max-shard-size", defaultValue = "5GB", description = "largest hf shard file (default: ${DEFAULT-VALUE})")
    String maxShardSize;

    @Option(names = "--overwrite", description = "replace a non-empty output directory")
    boolean overwrite;

    @Option(names = "--quiet", description = "no progress bar")
    boolean quiet;

    @Option(names = "--no-verify", description = "skip comparing a djl input's files with their recorded checksums")
    boolean noVerify;

    @Option(names = "--allow-nonfinite", description = "convert NaN or infinite weights (refused by default)")
    boolean allowNonFinite;

    @Override
    public Integer call() {
        positive("--tp", tp);
        positive("--pp", pp);
        positive("--ep", ep);
        positive("--vp", vp);
        ReadChecks checks = new ReadChecks(!noVerify, allowNonFinite);
        CheckpointConverter.Result r = CheckpointConverter.convert(new CheckpointConverter.Options(input, output,
                CheckpointFormat.parse(to), from == null ? null : CheckpointFormat.parse(from), layout(checks),
                dtype == null ? null : dtype(dtype), modelConfig, modelType,
                HfWeightSink.parseSize(maxShardSize), overwrite, quiet ? null : System.err,
                checks));
        System.out.printf("converted %s -> %s: %d layers, %.1f MB of tensors in %.2f s (%.0f MB/s) to %s%n",
                r.from().cliName(), to, r.config().numLayers(), r.bytes() / 1e6, r.seconds(),
                r.bytes() / 1e6 / r.seconds(), output);
        return 0;
    }

    /**
     * The output's split. An uneven one needs the input's layer count, so the input's config is
     * read first (Megatron's rule: the other stages share the rest evenly).
     */
    private ParallelLayout layout(ReadChecks checks) {
        ParallelLayout even = new ParallelLayout(tp, pp, ep, vp, java.util.List.of());
        if (firstStageLayers == null && lastStageLayers == null) {
            return even;
        }
        CheckpointFormat format = from != null ? CheckpointFormat.parse(from) : CheckpointFormat.detect(input);
        try (WeightSource source = format.open(input, modelConfig, checks)) {
            return even.withStages(PipelineLayout.of(source.config().numLayers(), pp, vp, firstStageLayers,
                    lastStageLayers));
        }
    }

    static SafetensorsDType dtype(String name) {
        return switch (name) {
            case "fp32" -> SafetensorsDType.F32;
            case "fp16" -> SafetensorsDType.F16;
            case "bf16" -> SafetensorsDType.BF16;
            default -> throw new IllegalArgumentException("--dtype " + name + ": expected fp32, fp16 or bf16");
        };
    }
}
