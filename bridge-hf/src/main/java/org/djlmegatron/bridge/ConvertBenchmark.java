package org.djlmegatron.bridge;

import com.google.gson.GsonBuilder;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.lang.management.MemoryPoolMXBean;
import java.lang.management.MemoryType;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.djlmegatron.bridge.convert.HostTensor;
import org.djlmegatron.bridge.convert.ModelParams;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.bridge.convert.ParamSpec;
import org.djlmegatron.bridge.convert.SafetensorsFileWriter;
import org.djlmegatron.bridge.export.HfConfigWriter;
import org.djlmegatron.bridge.export.HfTensorMapping;
import org.djlmegatron.bridge.export.HfWeightSink;
import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Conversion throughput on a synthetic Llama-shaped fp32 checkpoint, reported against a plain
 * copy of the same bytes measured in the same run (so the figure compares across disks), with
 * the peak Java heap during the conversion (which should be a few tensors, not the model).
 */
public final class ConvertBenchmark {

    private static final int COPY_BUFFER = 8 << 20;

    /**
     * The measurements.
     *
     * @param config the synthetic model
     * @param bytes bytes of tensor data in the checkpoint
     * @param largestTensor bytes of its largest tensor
     * @param copySeconds the fastest of three plain copies (read + write + sync)
     * @param convertSeconds the faster of two conversions (open, read, reshard, write, sync, rename)
     * @param peakHeap peak heap use during the conversion, summed over heap pools: the collector's
     *     high-water mark, garbage included (G1 with a large heap collects lazily)
     * @param peakLive the most the conversion holds: heap in use right after full collections forced
     *     every 50 ms during a third, untimed conversion
     */
    public record Result(TransformerConfig config, long bytes, long largestTensor, double copySeconds,
            double convertSeconds, long peakHeap, long peakLive) {

        public double copyGbPerSecond() {
            return bytes / 1e9 / copySeconds;
        }

        public double convertGbPerSecond() {
            return bytes / 1e9 / convertSeconds;
        }
    }

    private ConvertBenchmark() {}

    /** A Llama-family config of about {@code gigabytes} of fp32 weights (at least 4 layers). */
    public static TransformerConfig syntheticConfig(double gigabytes) {
        boolean large = gigabytes >= 0.5;
        int hidden = large ? 2048 : 256;
        int ffn = large ? 5632 : 704;
        int vocab = large ? 16384 : 4096;
        int heads = large ? 16 : 8;
        int groups = large ? 4 : 2;
        long perLayer = 4L * (hidden * (long) (heads + 2 * groups) * (hidden / heads) + (long) hidden * hidden
                + 3L * hidden * ffn + 2L * hidden);
        long fixed = 4L * (2L * vocab * hidden + hidden);
        // a multiple of 4 layers, so pipeline sizes 2 and 4 divide it
        int layers = (int) Math.max(4, 4 * Math.round((gigabytes * 1e9 - fixed) / perLayer / 4));
        return TransformerConfig.builder().numLayers(layers).hiddenSize(hidden).numAttentionHeads(heads)
                .numQueryGroups(groups).ffnHiddenSize(ffn).vocabSize(vocab).maxPositionEmbeddings(4096).build();
    }

    /** Writes a Hugging Face Llama checkpoint of random fp32 weights for {@code config} into {@code dir}. */
    public static void writeSynthetic(Path dir, TransformerConfig config) throws IOException {
        Files.createDirectories(dir);
        HfTensorMapping mapping = new HfTensorMapping("llama", config);
        List<SafetensorsFileWriter.Entry> entries = new ArrayList<>();
        List<HfTensorMapping.Recipe> recipes = new ArrayList<>();
        for (ParamSpec s : ModelParams.of(config)) {
            HfTensorMapping.Recipe r = mapping.recipe(s);
            recipes.add(r);
            for (int i = 0; i < r.names().size(); i++) {
                entries.add(new SafetensorsFileWriter.Entry(r.names().get(i), SafetensorsDType.F32, r.shapes().get(i)));
            }
        }
        SplittableRandom rng = new SplittableRandom(1234);
        try (SafetensorsFileWriter w = SafetensorsFileWriter.create(dir.resolve("model.safetensors"), entries,
                Map.of("format", "pt"))) {
            for (HfTensorMapping.Recipe r : recipes) {
                for (int i = 0; i < r.names().size(); i++) {
                    long[] shape = r.shapes().get(i);
                    long n = 1;
                    for (long d : shape) {
                        n *= d;
                    }
                    ByteBuffer b = ByteBuffer.allocate(Math.toIntExact(4 * n)).order(ByteOrder.LITTLE_ENDIAN);
                    for (long k = 0; k < n; k++) {
                        b.putFloat((float) ((rng.nextDouble() - 0.5) * 0.04));
                    }
                    w.write(r.names().get(i), new HostTensor(SafetensorsDType.F32, shape, b.array()));
                }
            }
            w.finish();
        }
        Files.writeString(dir.resolve("config.json"), new GsonBuilder().setPrettyPrinting().create()
                .toJson(HfConfigWriter.config("llama", config, SafetensorsDType.F32)));
    }

    /**
     * Alternates plain copies and conversions (copy, convert, copy, convert, copy) and keeps the
     * best of each, so a noisy disk affects both alike; the peak heap is that of the conversions.
     *
     * @param source a checkpoint written by {@link #writeSynthetic}
     * @param work an empty directory for the copies and the outputs
     */
    public static Result run(Path source, TransformerConfig config, Path work, CheckpointFormat to,
            ParallelLayout layout, SafetensorsDType dtype) throws IOException {
        Path file = source.resolve("model.safetensors");
        long largest = 0;
        long bytes = 0;
        for (ParamSpec s : ModelParams.of(config)) {
            largest = Math.max(largest, 4 * s.numel());
            bytes += 4 * s.numel();
        }
        List<MemoryPoolMXBean> heap = ManagementFactory.getMemoryPoolMXBeans().stream()
                .filter(p -> p.getType() == MemoryType.HEAP).toList();
        double copy = copy(file, work.resolve("copy"));
        double convert = Double.MAX_VALUE;
        long peak = 0;
        for (int i = 0; i < 2; i++) {
            System.gc();
            heap.forEach(MemoryPoolMXBean::resetPeakUsage);
            Path out = work.resolve("converted");
            CheckpointConverter.Result r = CheckpointConverter.convert(new CheckpointConverter.Options(source, out, to,
                    CheckpointFormat.HF, layout, dtype, null, null, HfWeightSink.DEFAULT_MAX_SHARD, false, null));
            peak = Math.max(peak, heap.stream().mapToLong(p -> p.getPeakUsage().getUsed()).sum());
            convert = Math.min(convert, r.seconds());
            CheckpointConverter.deleteTree(out);
            copy = Math.min(copy, copy(file, work.resolve("copy")));
        }
        long live = peakLive(() -> {
            Path out = work.resolve("converted");
            CheckpointConverter.convert(new CheckpointConverter.Options(source, out, to, CheckpointFormat.HF, layout,
                    dtype, null, null, HfWeightSink.DEFAULT_MAX_SHARD, false, null));
            CheckpointConverter.deleteTree(out);
            return null;
        });
        return new Result(config, bytes, largest, copy, convert, peak, live);
    }

    /**
     * The most heap {@code work} keeps reachable: a sampler forces a full collection every 50 ms
     * while it runs and keeps the largest heap in use right after one.
     */
    private static long peakLive(java.util.concurrent.Callable<Void> work) throws IOException {
        java.util.concurrent.atomic.AtomicLong peak = new java.util.concurrent.atomic.AtomicLong();
        java.util.concurrent.atomic.AtomicBoolean running = new java.util.concurrent.atomic.AtomicBoolean(true);
        Runtime rt = Runtime.getRuntime();
        Thread sampler = new Thread(() -> {
            while (running.get()) {
                System.gc();
                peak.accumulateAndGet(rt.totalMemory() - rt.freeMemory(), Math::max);
                try {
                    Thread.sleep(50);
                } catch (InterruptedException e) {
                    return;
                }
            }
        }, "live-heap-sampler");
        sampler.setDaemon(true);
        System.gc();
        sampler.start();
        try {
            work.call();
        } catch (IOException | RuntimeException e) {
            throw e;
        } catch (Exception e) {
            throw new IllegalStateException(e);
        } finally {
            running.set(false);
            sampler.interrupt();
            try {
                sampler.join(10_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        return peak.get();
    }

    /** Seconds to read {@code file} through a heap buffer and write it to {@code target}, synced. */
    private static double copy(Path file, Path target) throws IOException {
        long t0 = System.nanoTime();
        ByteBuffer buf = ByteBuffer.allocate(COPY_BUFFER);
        try (FileChannel in = FileChannel.open(file, StandardOpenOption.READ);
                FileChannel out = FileChannel.open(target, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            while (in.read(buf.clear()) > 0) {
                buf.flip();
                while (buf.hasRemaining()) {
                    out.write(buf);
                }
            }
            out.force(true);
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        Files.delete(target);
        return seconds;
    }
}
