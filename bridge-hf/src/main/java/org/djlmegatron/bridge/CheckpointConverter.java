package org.djlmegatron.bridge;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.security.SecureRandom;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.convert.HostTensor;
import org.djlmegatron.bridge.convert.ModelParams;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.bridge.convert.ParamSpec;
import org.djlmegatron.bridge.convert.ReadChecks;
import org.djlmegatron.bridge.convert.ProgressBar;
import org.djlmegatron.bridge.convert.SinkPlan;
import org.djlmegatron.bridge.convert.WeightSink;
import org.djlmegatron.bridge.convert.WeightSource;
import org.djlmegatron.bridge.djl.DjlWeightSink;
import org.djlmegatron.bridge.export.HfWeightSink;
import org.djlmegatron.bridge.export.HfWeightSource;
import org.djlmegatron.bridge.megatron.DistWeightSink;
import org.djlmegatron.bridge.megatron.LegacyWeightSink;
import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Converts a checkpoint between any two formats, resharding to the requested TP/PP/EP and
 * optionally changing the floating-point type. Streaming: one parameter at a time is read
 * (assembled from its shards), converted and written (split into the new shards), so memory
 * holds a few tensors, never the model. The output appears atomically: it is written to a hidden
 * sibling directory and renamed into place; on any failure nothing is left behind.
 */
public final class CheckpointConverter {

    /**
     * What to convert.
     *
     * @param input the source checkpoint directory
     * @param output the directory to create (must be absent or empty unless {@code overwrite})
     * @param to the output format
     * @param from the input format, or null to detect it
     * @param layout TP/PP/EP of the output (megatron and djl formats)
     * @param dtype floating-point type of the output, or null to keep each tensor's
     * @param modelConfig Megatron arguments as JSON for Megatron inputs without {@code args}, or null
     * @param hfModelType architecture of a Hugging Face output, or null to keep the input's or infer it
     * @param maxShardSize largest Hugging Face shard file, in bytes
     * @param overwrite replace a non-empty output directory
     * @param progress where the progress bar goes, or null for none
     * @param checks checksum verification of the input and the refusal of non-finite weights
     */
    public record Options(Path input, Path output, CheckpointFormat to, CheckpointFormat from, ParallelLayout layout,
            SafetensorsDType dtype, Path modelConfig, String hfModelType, long maxShardSize, boolean overwrite,
            PrintStream progress, ReadChecks checks) {

        /** Options with every read check on. */
        public Options(Path input, Path output, CheckpointFormat to, CheckpointFormat from, ParallelLayout layout,
                SafetensorsDType dtype, Path modelConfig, String hfModelType, long maxShardSize, boolean overwrite,
                PrintStream progress) {
            this(input, output, to, from, layout, dtype, modelConfig, hfModelType, maxShardSize, overwrite, progress,
                    ReadChecks.ALL);
        }

        /** Options converting {@code input} (format detected) to {@code to} at {@code output}, unsharded. */
        public static Builder builder(Path input, Path output, CheckpointFormat to) {
            return new Builder(input, output, to);
        }
    }

    /** Builder of {@link Options}: everything but input, output and format has a default. */
    public static final class Builder {
        private final Path input;
        private final Path output;
        private final CheckpointFormat to;
        private CheckpointFormat from;
        private ParallelLayout layout = ParallelLayout.SINGLE;
        private SafetensorsDType dtype;
        private Path modelConfig;
        private String hfModelType;
        private long maxShardSize = DEFAULT_MAX_SHARD_SIZE;
        private boolean overwrite;
        private PrintStream progress;
        private ReadChecks checks = ReadChecks.ALL;

        private Builder(Path input, Path output, CheckpointFormat to) {
            this.input = input;
            this.output = output;
            this.to = to;
        }

        /** The input's format, when detection should not decide. */
        public Builder from(CheckpointFormat v) { from = v; return this; }
        /** TP/PP/EP sizes of Megatron or djl output. */
        public Builder layout(ParallelLayout v) { layout = v; return this; }
        /** Floating-point type of the output (default: keep the input's). */
        public Builder dtype(SafetensorsDType v) { dtype = v; return this; }
        /** Megatron arguments as JSON, for Megatron checkpoints without {@code args}. */
        public Builder modelConfig(Path v) { modelConfig = v; return this; }
        /** Hugging Face {@code model_type} of HF output (default: from the model). */
        public Builder hfModelType(String v) { hfModelType = v; return this; }
        /** Largest HF safetensors shard in bytes. */
        public Builder maxShardSize(long v) { maxShardSize = v; return this; }
        /** Replace a non-empty output directory. */
        public Builder overwrite(boolean v) { overwrite = v; return this; }
        /** Where the progress bar goes (default: none). */
        public Builder progress(PrintStream v) { progress = v; return this; }
        /** Checksum verification and the non-finite refusal (default: both on). */
        public Builder checks(ReadChecks v) { checks = v; return this; }

        public Options build() {
            return new Options(input, output, to, from, layout, dtype, modelConfig, hfModelType, maxShardSize,
                    overwrite, progress, checks);
        }
    }

    /**
     * What was done.
     *
     * @param from the detected input format
     * @param config the model
     * @param bytes bytes of tensor data read
     * @param seconds wall time of the conversion (opening to rename)
     */
    public record Result(CheckpointFormat from, TransformerConfig config, long bytes, double seconds) {}

    /** transformers' default {@code max_shard_size}: 5 GB. */
    public static final long DEFAULT_MAX_SHARD_SIZE = 5_000_000_000L;

    private static final SecureRandom RANDOM = new SecureRandom();

    private CheckpointConverter() {}

    public static Result convert(Options o) {
        long t0 = System.nanoTime();
        Path output = o.output().toAbsolutePath().normalize();
        Path input = o.input().toAbsolutePath().normalize();
        checkOutput(input, output, o.overwrite());
        CheckpointFormat from = o.from() != null ? o.from() : CheckpointFormat.detect(input);
        if (o.to() != CheckpointFormat.MEGATRON && o.to() != CheckpointFormat.DJL
                && !o.layout().equals(ParallelLayout.SINGLE)) {
            throw new CheckpointException("--tp/--pp/--ep do not apply to " + o.to().cliName() + " output ("
                    + (o.to() == CheckpointFormat.HF ? "Hugging Face checkpoints are unsharded"
                    : "torch_dist checkpoints hold global tensors; Megatron reshards them when it loads") + ")");
        }
        try (WeightSource source = from.open(input, o.modelConfig(), o.checks())) {
            TransformerConfig config = source.config();
            o.layout().validate(config);
            List<ParamSpec> params = ModelParams.of(config);
            Map<String, SafetensorsDType> dtypes = new HashMap<>();
            long total = 0;
            for (ParamSpec p : params) {
                SafetensorsDType stored = source.dtype(p);
                dtypes.put(p.name(), o.dtype() != null && isFloat(stored) ? o.dtype() : stored);
                total += p.numel() * stored.elementSize();
            }
            SinkPlan plan = new SinkPlan(config, params, dtypes, o.layout(), source.iteration());
            Path tmp = sibling(output, "tmp");
            try {
                Files.createDirectories(tmp);
                String hfType = o.hfModelType() != null ? o.hfModelType()
                        : source instanceof HfWeightSource hf ? hf.modelType() : null;
                try (WeightSink sink = create(o.to(), tmp, plan, output, hfType, o.maxShardSize())) {
                    ProgressBar bar = o.progress() == null ? null : new ProgressBar(o.progress(), total);
                    for (ParamSpec p : params) {
                        HostTensor t = source.read(p);
                        o.checks().requireFinite(source.describe(), p.name(), t);
                        if (bar != null) {
                            bar.advance(t.data().length);
                        }
                        sink.put(p, t.to(plan.dtype(p)));
                    }
                    sink.finish();
                    if (bar != null) {
                        bar.finish();
                    }
                }
                moveIntoPlace(tmp, output);
            } catch (IOException e) {
                deleteQuietly(tmp, e);
                throw new CheckpointException(output + ": " + e, e);
            } catch (RuntimeException | Error e) {
                deleteQuietly(tmp, e);
                throw e;
            }
            return new Result(from, config, total, (System.nanoTime() - t0) / 1e9);
        }
    }

    private static WeightSink create(CheckpointFormat to, Path dir, SinkPlan plan, Path finalDir, String hfType,
            long maxShardSize) {
        return switch (to) {
            case HF -> HfWeightSink.create(dir, plan, hfType, maxShardSize);
            case MEGATRON -> LegacyWeightSink.create(dir, plan);
            case MEGATRON_DIST -> DistWeightSink.create(dir, plan, finalDir);
            case DJL -> DjlWeightSink.create(dir, plan);
        };
    }

    private static boolean isFloat(SafetensorsDType d) {
        return d == SafetensorsDType.F32 || d == SafetensorsDType.F16 || d == SafetensorsDType.BF16
                || d == SafetensorsDType.F64;
    }

    private static void checkOutput(Path input, Path output, boolean overwrite) {
        if (output.startsWith(input) || input.startsWith(output)) {
            throw new CheckpointException(output + ": the output must not contain, or lie inside, the input " + input);
        }
        if (Files.exists(output)) {
            if (!Files.isDirectory(output)) {
                throw new CheckpointException(output + ": exists and is not a directory");
            }
            try (Stream<Path> s = Files.list(output)) {
                if (s.findAny().isPresent() && !overwrite) {
                    throw new CheckpointException(output + ": directory is not empty; pass --overwrite to replace it");
                }
            } catch (IOException e) {
                throw new CheckpointException(output + ": cannot list: " + e, e);
            }
        }
    }

    /** Renames {@code tmp} to {@code output}, replacing what is there only once the new one is complete. */
    private static void moveIntoPlace(Path tmp, Path output) throws IOException {
        if (Files.exists(output)) {
            Path old = sibling(output, "old");
            Files.move(output, old, StandardCopyOption.ATOMIC_MOVE);
            Files.move(tmp, output, StandardCopyOption.ATOMIC_MOVE);
            deleteTree(old);
        } else {
            Files.move(tmp, output, StandardCopyOption.ATOMIC_MOVE);
        }
    }

    /** A hidden sibling of {@code p}: same file system, so renames are atomic. */
    private static Path sibling(Path p, String kind) {
        return p.resolveSibling("." + p.getFileName() + "." + kind + "-" + Long.toUnsignedString(RANDOM.nextLong(), 36));
    }

    private static void deleteQuietly(Path dir, Throwable failure) {
        try {
            deleteTree(dir);
        } catch (IOException e) {
            failure.addSuppressed(e);
        }
    }

    /** Deletes a directory tree (absent is fine). */
    public static void deleteTree(Path dir) throws IOException {
        if (!Files.exists(dir)) {
            return;
        }
        Files.walkFileTree(dir, new SimpleFileVisitor<>() {
            @Override
            public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                Files.delete(file);
                return FileVisitResult.CONTINUE;
            }

            @Override
            public FileVisitResult postVisitDirectory(Path d, IOException e) throws IOException {
                if (e != null) {
                    throw e;
                }
                Files.delete(d);
                return FileVisitResult.CONTINUE;
            }
        });
    }
}
