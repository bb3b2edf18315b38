package org.djlmegatron.cli;

import static org.djlmegatron.options.OptionChecks.positive;
import static org.djlmegatron.options.OptionChecks.positiveFinite;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.concurrent.Callable;
import java.util.stream.Stream;
import org.djlmegatron.bridge.CheckpointFormat;
import org.djlmegatron.bridge.ConvertBenchmark;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.transformer.TransformerConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code bench-convert}: checkpoint conversion throughput against a plain copy, and peak heap. */
@Command(name = "bench-convert", mixinStandardHelpOptions = true,
        description = "Convert a synthetic Llama-shaped fp32 checkpoint and report GB/s as a ratio of a plain "
                + "copy of the same bytes, and the peak Java heap.")
final class BenchConvertCommand implements Callable<Integer> {

    @Option(names = "--size-gb", defaultValue = "1", description = "checkpoint size in GB (default: ${DEFAULT-VALUE})")
    double sizeGb;

    @Option(names = "--to", defaultValue = "megatron", description = "output format (default: ${DEFAULT-VALUE})")
    String to;

    @Option(names = "--tp", defaultValue = "2", description = "TP of a megatron/djl output (default: ${DEFAULT-VALUE})")
    int tp;

    @Option(names = "--pp", defaultValue = "2", description = "PP of a megatron/djl output (default: ${DEFAULT-VALUE})")
    int pp;

    @Option(names = "--ep", defaultValue = "1", description = "EP of a megatron/djl output (default: ${DEFAULT-VALUE})")
    int ep;

    @Option(names = "--dtype", description = "output floating-point type: fp32, fp16, bf16 (default: keep)")
    String dtype;

    @Option(names = "--work-dir", description = "where the checkpoints are written (default: a temporary directory)")
    Path workDir;

    @Override
    public Integer call() throws IOException {
        positiveFinite("--size-gb", sizeGb);
        positive("--tp", tp);
        positive("--pp", pp);
        positive("--ep", ep);
        Path work = workDir != null ? Files.createDirectories(workDir) : Files.createTempDirectory("djlm-bench-convert");
        try {
            TransformerConfig cfg = ConvertBenchmark.syntheticConfig(sizeGb);
            Path source = work.resolve("synthetic-hf");
            ConvertBenchmark.writeSynthetic(source, cfg);
            CheckpointFormat target = CheckpointFormat.parse(to);
            ParallelLayout layout = target == CheckpointFormat.MEGATRON || target == CheckpointFormat.DJL
                    ? new ParallelLayout(tp, pp, ep) : ParallelLayout.SINGLE;
            ConvertBenchmark.Result r = ConvertBenchmark.run(source, cfg, work, target, layout,
                    dtype == null ? null : ConvertCommand.dtype(dtype));
            System.out.printf("synthetic llama checkpoint: %d layers, hidden %d, ffn %d, vocab %d, fp32, %.3f GB "
                    + "(largest tensor %.0f MB)%n", cfg.numLayers(), cfg.hiddenSize(), cfg.ffnHiddenSize(),
                    cfg.vocabSize(), r.bytes() / 1e9, r.largestTensor() / 1e6);
            System.out.printf("plain copy (read + write + sync): %.2f GB/s%n", r.copyGbPerSecond());
            System.out.printf("convert hf -> %s (%s%s): %.2f GB/s = %.2fx the plain copy%n", to, layout,
                    dtype == null ? "" : ", " + dtype, r.convertGbPerSecond(), r.convertGbPerSecond() / r.copyGbPerSecond());
            System.out.printf("peak heap during the conversion: %.0f MB (the collector's high-water mark, garbage "
                    + "included; max heap %.0f MB)%n", r.peakHeap() / 1e6, Runtime.getRuntime().maxMemory() / 1e6);
            System.out.printf("peak live heap (after forced collections): %.0f MB = %.1fx the largest tensor%n",
                    r.peakLive() / 1e6, (double) r.peakLive() / r.largestTensor());
            return 0;
        } finally {
            if (workDir == null) {
                try (Stream<Path> s = Files.walk(work)) {
                    s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
                }
            }
        }
    }
}
