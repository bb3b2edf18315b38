package org.djlmegatron.cli;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/** What a command printed, and where the shared reference fixtures are. */
final class CliCapture {

    private CliCapture() {}

    static String stdoutOf(Runnable r) {
        PrintStream old = System.out;
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        System.setOut(new PrintStream(buf, true, StandardCharsets.UTF_8));
        try {
            r.run();
        } finally {
            System.setOut(old);
        }
        return buf.toString(StandardCharsets.UTF_8);
    }

    static String stderrOf(Runnable r) {
        PrintStream old = System.err;
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        System.setErr(new PrintStream(buf, true, StandardCharsets.UTF_8));
        try {
            r.run();
        } finally {
            System.setErr(old);
        }
        return buf.toString(StandardCharsets.UTF_8);
    }

    /** {@code ../shared/fixtures/<relative>} from the repository root. */
    static Path fixture(String relative) {
        return Path.of(System.getProperty("djlm.repo.root", ".")).resolve("../shared/fixtures").resolve(relative)
                .toAbsolutePath().normalize();
    }
}
