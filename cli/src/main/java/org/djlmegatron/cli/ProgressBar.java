package org.djlmegatron.cli;

import java.io.PrintStream;
import java.util.Locale;

/**
 * A progress display for long jobs: a single line redrawn in place ({@code \r}) when the output
 * is a terminal, plain lines every few seconds otherwise (logs stay readable). Shows the done
 * fraction of a known total, its rate and the time left, and optionally the rate of a second
 * count (documents, tokens, samples):
 * <pre>preprocess [#########...........]  45%  1.8/4.0 MB  3.5 MB/s  2,400 docs/s  ETA 0:01</pre>
 * Used from one thread.
 */
public final class ProgressBar {

    private static final int WIDTH = 20;
    private static final long REDRAW_NANOS = 100_000_000L;
    private static final long LOG_NANOS = 5_000_000_000L;

    private final String label;
    private final long total;
    private final String unit;
    private final double unitScale;
    private String itemUnit;
    private PrintStream out = System.err;
    private boolean interactive = System.console() != null;
    private final long start = System.nanoTime();
    private long lastDraw = Long.MIN_VALUE;
    private long done;
    private long items;
    private int lastWidth;

    /**
     * A bar for {@code total} units of work, shown as {@code unit} after dividing by
     * {@code unitScale} (e.g. bytes as {@code "MB"} with {@code 1e6}; iterations as {@code "it"}
     * with 1).
     */
    public ProgressBar(String label, long total, String unit, double unitScale) {
        this.label = label;
        this.total = total;
        this.unit = unit;
        this.unitScale = unitScale;
    }

    /** Also shows the rate of a second count, e.g. {@code "docs"}. */
    public ProgressBar withItems(String itemUnit) {
        this.itemUnit = itemUnit;
        return this;
    }

    /** Draws on {@code out}; redraws one line in place if {@code interactive}. */
    public ProgressBar to(PrintStream out, boolean interactive) {
        this.out = out;
        this.interactive = interactive;
        return this;
    }

    /** Sets the absolute progress: {@code done} units of the total, {@code items} counted so far. */
    public void update(long done, long items) {
        this.done = done;
        this.items = items;
        long now = System.nanoTime();
        if (lastDraw == Long.MIN_VALUE || now - lastDraw >= (interactive ? REDRAW_NANOS : LOG_NANOS)) {
            draw(now);
        }
    }

    /** Adds to the progress. */
    public void add(long doneDelta, long itemsDelta) {
        update(done + doneDelta, items + itemsDelta);
    }

    /** Draws the final state and ends the line. */
    public void finish() {
        draw(System.nanoTime());
        if (interactive) {
            out.println();
        }
        out.flush();
    }

    /** Ends a redrawn line without a final state, so an error message after a failure starts on its own line. */
    public void stop() {
        if (interactive && lastWidth > 0) {
            out.println();
            out.flush();
        }
    }

    private void draw(long now) {
        lastDraw = now;
        String line = render((now - start) / 1e9, done, items);
        if (interactive) {
            out.print("\r" + line + " ".repeat(Math.max(0, lastWidth - line.length())));
            lastWidth = line.length();
        } else {
            out.println(line);
        }
        out.flush();
    }

    /** The line shown after {@code seconds} with {@code done} units and {@code items} items. */
    String render(double seconds, long done, long items) {
        double fraction = total > 0 ? Math.min(1.0, done / (double) total) : 0;
        int filled = (int) Math.round(fraction * WIDTH);
        double rate = seconds > 0 ? done / unitScale / seconds : 0;
        StringBuilder sb = new StringBuilder(label).append(" [").append("#".repeat(filled))
                .append(".".repeat(WIDTH - filled)).append("] ")
                .append(String.format(Locale.ROOT, "%3d%%  %s/%s %s  %s %s/s", (int) (fraction * 100),
                        number(done / unitScale), number(total / unitScale), unit, number(rate), unit));
        if (itemUnit != null) {
            sb.append(String.format(Locale.ROOT, "  %,.0f %s/s", seconds > 0 ? items / seconds : 0.0, itemUnit));
        }
        if (done >= total) {
            sb.append("  in ").append(clock(seconds));
        } else if (rate > 0) {
            sb.append("  ETA ").append(clock((total - done) / unitScale / rate));
        }
        return sb.toString();
    }

    private static String number(double v) {
        return v >= 100 ? String.format(Locale.ROOT, "%,.0f", v) : String.format(Locale.ROOT, "%.1f", v);
    }

    private static String clock(double seconds) {
        long s = Math.round(seconds);
        return s >= 3600 ? String.format(Locale.ROOT, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
                : String.format(Locale.ROOT, "%d:%02d", s / 60, s % 60);
    }
}
