package org.djlmegatron.examples;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.stream.Stream;
import org.djlmegatron.bridge.CheckpointConverter;
import org.djlmegatron.bridge.CheckpointFormat;
import org.djlmegatron.bridge.LogitsRunner;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.io.SafetensorsReader;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Converts a Hugging Face checkpoint to Megatron-LM's legacy format split for TP=2 x PP=2, then to
 * Megatron's {@code torch_dist} format, then back to Hugging Face, with the library's
 * {@link CheckpointConverter}. Checks that the Megatron checkpoint computes transformers' logits
 * (on two tensor-parallel thread ranks) and that every tensor came back bit for bit.
 */
@Command(name = "ConvertCheckpoints", mixinStandardHelpOptions = true,
        description = "HF -> Megatron (TP 2, PP 2) -> Megatron torch_dist -> HF, checked on the way.")
public final class ConvertCheckpoints implements Callable<Integer> {

    @Option(names = "--input", defaultValue = "../shared/fixtures/hf/llama",
            description = "a Hugging Face checkpoint directory (default: ${DEFAULT-VALUE})")
    Path input;

    @Option(names = "--work-dir", description = "where the converted checkpoints go (default: a temporary directory)")
    Path workDir;

    /**
     * What the round trip showed.
     *
     * @param files the files of each checkpoint written, relative to it
     * @param logitsDiff max |logits of the Megatron checkpoint - transformers' golden logits|, or NaN without golden file
     * @param tensors tensors compared
     * @param identical tensors identical bit for bit after the round trip
     */
    public record Result(List<String> files, double logitsDiff, int tensors, int identical) {}

    public static void main(String[] args) {
        System.exit(new CommandLine(new ConvertCheckpoints()).execute(args));
    }

    @Override
    public Integer call() throws IOException {
        try (WorkDir dir = WorkDir.of(workDir, "convert-checkpoints", System.out)) {
            Result r = run(input, dir.path(), System.out);
            r.files().forEach(System.out::println);
            if (!Double.isNaN(r.logitsDiff())) {
                System.out.printf(Locale.ROOT, "Megatron TP=2 logits vs transformers: max |diff| = %.2e%n", r.logitsDiff());
            }
            System.out.printf("%d of %d tensors identical after HF -> megatron -> megatron-dist -> HF%n",
                    r.identical(), r.tensors());
            return r.identical() == r.tensors() ? 0 : 1;
        }
    }

    public static Result run(Path hf, Path dir, PrintStream out) throws IOException {
        Path megatron = dir.resolve("megatron-tp2-pp2");
        Path dist = dir.resolve("megatron-dist");
        Path back = dir.resolve("hf-again");
        convert(hf, megatron, CheckpointFormat.MEGATRON, new ParallelLayout(2, 2, 1), out);
        convert(megatron, dist, CheckpointFormat.MEGATRON_DIST, ParallelLayout.SINGLE, out);
        convert(dist, back, CheckpointFormat.HF, ParallelLayout.SINGLE, out);

        List<String> files = new ArrayList<>();
        for (Path p : List.of(megatron, dist, back)) {
            try (Stream<Path> walk = Files.walk(p)) {
                walk.filter(Files::isRegularFile).sorted()
                        .forEach(f -> files.add(dir.relativize(f) + "  (" + size(f) + " bytes)"));
            }
        }

        // The Megatron checkpoint on two TP ranks computes what transformers computed.
        double logitsDiff = Double.NaN;
        Path golden = hf.resolve("golden.safetensors");
        if (Files.exists(golden)) {
            try (SafetensorsReader g = SafetensorsReader.open(golden)) {
                long[] ids = g.loadLongs("input_ids");
                float[] expected = g.loadFloats("logits");
                int batch = (int) g.info("input_ids").shape()[0];
                float[] logits = LogitsRunner.logits(megatron, ids, batch, 2, true);
                logitsDiff = 0;
                for (int i = 0; i < logits.length; i++) {
                    logitsDiff = Math.max(logitsDiff, Math.abs(logits[i] - expected[i]));
                }
            }
        }

        // Every tensor of the original, bit for bit.
        int tensors = 0;
        int identical = 0;
        try (SafetensorsReader a = SafetensorsReader.open(hf); SafetensorsReader b = SafetensorsReader.open(back)) {
            for (String name : a.keys()) {
                tensors++;
                if (b.contains(name) && bitsEqual(a.loadFloats(name), b.loadFloats(name))) {
                    identical++;
                }
            }
        }
        return new Result(files, logitsDiff, tensors, identical);
    }

    static void convert(Path in, Path out, CheckpointFormat to, ParallelLayout layout, PrintStream log) {
        CheckpointConverter.Result r = CheckpointConverter.convert(
                CheckpointConverter.Options.builder(in, out, to).layout(layout).overwrite(true).build());
        log.printf(Locale.ROOT, "converted %s -> %s (tp %d, pp %d): %,d bytes in %.2f s%n", r.from().cliName(),
                to.cliName(), layout.tp(), layout.pp(), r.bytes(), r.seconds());
    }

    static boolean bitsEqual(float[] x, float[] y) {
        if (x.length != y.length) {
            return false;
        }
        for (int i = 0; i < x.length; i++) {
            if (Float.floatToRawIntBits(x[i]) != Float.floatToRawIntBits(y[i])) {
                return false;
            }
        }
        return true;
    }

    private static long size(Path f) {
        try {
            return Files.size(f);
        } catch (IOException e) {
            return -1;
        }
    }
}
