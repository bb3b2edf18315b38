package org.djlmegatron.pretrain;

import com.google.gson.JsonNull;
import com.google.gson.JsonObject;
import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.Locale;
import org.djlmegatron.training.StepResult;

/**
 * Rank 0's view of training: Megatron-style log lines every {@code logInterval} iterations, a
 * one-line progress bar with ETA on a terminal, and one JSON object per iteration in
 * {@code --metrics-out}.
 */
final class TrainingLog implements AutoCloseable {

    private static final DateTimeFormatter TIME = DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss");

    private final PrintStream out;
    private final long totalIters;
    private final int logInterval;
    private final double flopsPerIter;
    private final Writer metrics;
    private MoeBalance moeBalance;
    private final boolean terminal = System.console() != null;
    private final long start = System.nanoTime();
    private long skipped;
    private long nan;
    private double intervalLoss;
    private double intervalSeconds;
    private int intervalCount;

    TrainingLog(PrintStream out, long totalIters, int logInterval, double flopsPerIter, Path metricsOut) {
        this.out = out;
        this.totalIters = totalIters;
        this.logInterval = Math.max(1, logInterval);
        this.flopsPerIter = flopsPerIter;
        try {
            this.metrics = metricsOut == null ? null : Files.newBufferedWriter(metricsOut, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write --metrics-out " + metricsOut, e);
        }
    }

    /** The MoE balance figures of the next {@link #step} (null for a dense model). */
    void moe(MoeBalance balance) {
        this.moeBalance = balance;
    }

    void step(StepResult r, long consumedSamples, int globalBatch) {
        if (r.skipped()) {
            skipped++;
            if (Double.isNaN(r.gradNorm())) {
                nan++;
            }
        }
        intervalLoss += r.loss();
        intervalSeconds += r.seconds();
        intervalCount++;
        writeMetrics(r);
        if (r.iteration() % logInterval == 0 || r.iteration() == totalIters) {
            clearBar();
            out.println(line(r, consumedSamples, globalBatch) + (moeBalance == null ? "" : moeBalance.logText()));
            intervalLoss = 0;
            intervalSeconds = 0;
            intervalCount = 0;
        }
        bar(r.iteration());
    }

    void eval(long iteration, double loss) {
        clearBar();
        out.printf(Locale.ROOT, " validation loss at iteration %d | lm loss value: %.6E | lm loss PPL: %.6E |%n",
                iteration, loss, Math.exp(Math.min(loss, 700)));
    }

    void message(String text) {
        clearBar();
        out.println(text);
    }

    private String line(StepResult r, long consumedSamples, int globalBatch) {
        double ms = intervalSeconds / intervalCount * 1e3;
        double tokensPerS = r.tokens() / (intervalSeconds / intervalCount);
        double tflops = flopsPerIter / (intervalSeconds / intervalCount) / 1e12;
        return String.format(Locale.ROOT, " [%s] iteration %8d/%8d | consumed samples: %10d | elapsed time per "
                + "iteration (ms): %.1f | learning rate: %.6E | global batch size: %5d | lm loss: %.6E | "
                + "loss scale: %.1f | grad norm: %.3f | number of skipped iterations: %3d | number of nan "
                + "iterations: %3d | tokens/s: %.0f | TFLOP/s: %.3f |",
                LocalDateTime.now().format(TIME), r.iteration(), totalIters, consumedSamples, ms, r.lr(), globalBatch,
                intervalLoss / intervalCount, r.lossScale(), r.gradNorm(), skipped, nan, tokensPerS, tflops);
    }

    private void bar(long iteration) {
        if (!terminal) {
            return;
        }
        double elapsed = (System.nanoTime() - start) / 1e9;
        double eta = elapsed / iteration * (totalIters - iteration);
        int width = 30;
        int done = (int) (width * iteration / totalIters);
        out.printf(Locale.ROOT, "\r[%s%s] %d/%d  %.1f it/s  ETA %s", "=".repeat(done), " ".repeat(width - done),
                iteration, totalIters, iteration / elapsed, clock(eta));
        out.flush();
    }

    private void clearBar() {
        if (terminal) {
            out.print("\r" + " ".repeat(79) + "\r");
        }
    }

    private static String clock(double seconds) {
        long s = Math.round(seconds);
        return String.format(Locale.ROOT, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
    }

    private void writeMetrics(StepResult r) {
        if (metrics == null) {
            return;
        }
        JsonObject o = new JsonObject();
        o.addProperty("iteration", r.iteration());
        number(o, "loss", r.loss());
        number(o, "grad_norm", r.gradNorm());
        number(o, "lr", r.lr());
        number(o, "loss_scale", r.lossScale());
        o.addProperty("skipped", r.skipped());
        number(o, "tokens_per_s", r.tokens() / r.seconds());
        number(o, "tflops", flopsPerIter / r.seconds() / 1e12);
        number(o, "step_ms", r.seconds() * 1e3);
        if (moeBalance != null) {
            moeBalance.addTo(o);
        }
        try {
            metrics.write(o.toString());
            metrics.write('\n');
            metrics.flush();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write metrics", e);
        }
    }

    /** JSON has no NaN or infinity: a non-finite value (a diverged loss, a skipped step's norm) is null. */
    private static void number(JsonObject o, String key, double value) {
        if (Double.isFinite(value)) {
            o.addProperty(key, value);
        } else {
            o.add(key, JsonNull.INSTANCE);
        }
    }

    @Override
    public void close() {
        clearBar();
        if (metrics != null) {
            try {
                metrics.close();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }
}
