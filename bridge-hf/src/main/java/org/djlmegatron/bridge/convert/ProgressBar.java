package org.djlmegatron.bridge.convert;

import java.io.PrintStream;

/**
 * A one-line progress bar in bytes, redrawn in place ({@code \r}) at most every 200 ms:
 * {@code [#########           ]  45%  1.21 / 2.69 GB  310 MB/s} (kB or MB for
 * smaller totals). When the output is not a terminal (a log file, a pipe) it prints the same
 * line, newline-terminated, at most every 5 s and at the end: no {@code \r} frames in logs.
 */
public final class ProgressBar {

    private static final int WIDTH = 30;
    private static final long REDRAW_NANOS = 200_000_000L;
    private static final long LOG_NANOS = 5_000_000_000L;

    private final PrintStream out;
    private final long total;
    private final long start = System.nanoTime();
    private long done;
    private final boolean interactive;
    private long lastDraw;

    /** A bar on {@code out}, redrawn in place only when this JVM has a terminal. */
    public ProgressBar(PrintStream out, long totalBytes) {
        this(out, totalBytes, System.console() != null);
    }

    public ProgressBar(PrintStream out, long totalBytes, boolean interactive) {
        this.out = out;
        this.total = Math.max(1, totalBytes);
        this.interactive = interactive;
        this.lastDraw = interactive ? 0 : System.nanoTime();
    }

    /** Counts {@code bytes} more as done. */
    public void advance(long bytes) {
        done += bytes;
        long now = System.nanoTime();
        if (now - lastDraw >= (interactive ? REDRAW_NANOS : LOG_NANOS) || (interactive && done >= total)) {
            lastDraw = now;
            draw(now);
        }
    }

    /** Draws the final state and ends the line. */
    public void finish() {
        draw(System.nanoTime());
        if (interactive) {
            out.println();
        }
    }

    private void draw(long now) {
        double fraction = Math.min(1.0, (double) done / total);
        int filled = (int) Math.round(fraction * WIDTH);
        double seconds = Math.max(1e-9, (now - start) / 1e9);
        double scale = total >= 1e9 ? 1e9 : total >= 1e6 ? 1e6 : 1e3;
        String unit = total >= 1e9 ? "GB" : total >= 1e6 ? "MB" : "kB";
        out.printf((interactive ? "\r" : "") + "[%s%s] %3d%%  %.2f / %.2f %s  %.0f MB/s" + (interactive ? "" : "%n"),
                "#".repeat(filled), " ".repeat(WIDTH - filled),
                Math.round(fraction * 100), done / scale, total / scale, unit, done / 1e6 / seconds);
        out.flush();
    }
}
