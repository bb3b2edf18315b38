package org.djlmegatron.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

class ProgressBarTest {

    @Test
    void rendersFractionRatesAndEta() {
        ProgressBar bar = new ProgressBar("preprocess", 4_000_000, "MB", 1e6).withItems("docs");
        assertThat(bar.render(2.0, 1_000_000, 600))
                .isEqualTo("preprocess [#####...............]  25%  1.0/4.0 MB  0.5 MB/s  300 docs/s  ETA 0:06");
        assertThat(bar.render(8.0, 4_000_000, 2400))
                .isEqualTo("preprocess [####################] 100%  4.0/4.0 MB  0.5 MB/s  300 docs/s  in 0:08");
        assertThat(new ProgressBar("train", 5000, "it", 1).render(5000.0, 1000, 0))
                .isEqualTo("train [####................]  20%  1,000/5,000 it  0.2 it/s  ETA 5:33:20");
    }

    @Test
    void logsPlainLinesWhenNotATerminalAndRedrawsInPlaceOnOne() {
        ByteArrayOutputStream plain = new ByteArrayOutputStream();
        ProgressBar log = new ProgressBar("x", 10, "it", 1).to(new PrintStream(plain, true, StandardCharsets.UTF_8), false);
        log.update(3, 0);
        log.update(4, 0); // within 5 s of the last line: not logged
        log.finish();
        assertThat(plain.toString(StandardCharsets.UTF_8).lines()).hasSize(2).allMatch(l -> !l.contains("\r"));

        ByteArrayOutputStream tty = new ByteArrayOutputStream();
        ProgressBar live = new ProgressBar("x", 10, "it", 1).to(new PrintStream(tty, true, StandardCharsets.UTF_8), true);
        live.update(3, 0);
        live.update(10, 0); // within 0.1 s of the last redraw: drawn by finish
        live.finish();
        assertThat(tty.toString(StandardCharsets.UTF_8)).startsWith("\rx [").endsWith(System.lineSeparator())
                .contains("\rx [####################] 100%");
    }
}
