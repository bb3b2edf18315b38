package org.djlmegatron.bridge.convert;

import java.io.PrintStream;

/**
 * A one-line progress bar in bytes, redrawn in place ({@code \r}) at most every 200 ms:
 * {@code [#########           ]  45%  1.21 / 2.69 GB  310 MB/s} (kB or MB for
 * smaller totals).
 */
public final class ProgressBar {

    private static final int WIDTH = 30;
    private static final long REDRAW_NANOS = 200_000_000L;

    private final PrintStream out;
    private final long total;
    private final long start = System.nanoTime();
    private long done;
    private long lastDraw;

    public ProgressBar(PrintStream out, long totalBytes) {
        this.out = out;
        this.total = Math.max(1, totalBytes);
    }

    /** Counts {@code bytes} more as done. */
    public void advance(long bytes) {
        done += bytes;
        long now = System.nanoTime();
        if (now - lastDraw >= REDRAW_NANOS || done >= total) {
            lastDraw = now;
            draw(now);
        }
    }

    /** Draws the final state and ends the line. */
    public void finish() {
        draw(System.nanoTime());
        out.println();
    }

    private void draw(long now) {
        double fraction = Math.min(1.0, (double) done / total);
        int filled = (int) Math.round(fraction * WIDTH);
        double seconds = Math.max(1e-9, (now - start) / 1e9);
        double scale = total >= 1e9 ? 1e9 : total >= 1e6 ? 1e6 : 1e3;
        String unit = total >= 1e9 ? "GB" : total >= 1e6 ? "MB" : "kB";
        out.printf("\r[%s%s] %3d%%  %.2f / %.2f %s  %.0f MB/s", "#".repeat(filled), " ".repeat(WIDTH - filled),
                Math.round(fraction * 100), done / scale, total / scale, unit, done / 1e6 / seconds);
        out.flush();
    }
}
