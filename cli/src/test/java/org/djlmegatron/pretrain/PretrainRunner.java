package org.djlmegatron.pretrain;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import org.djlmegatron.training.StepResult;
import picocli.CommandLine;

/** Runs {@code pretrain-gpt} in-process from a command line, output captured. */
final class PretrainRunner {

    private PretrainRunner() {}

    static List<StepResult> run(String... args) {
        PretrainOptions o = new PretrainOptions();
        new CommandLine(o).parseArgs(args);
        PrintStream sink = new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8);
        return new PretrainGpt(o, sink).run();
    }

    /** Runs {@code pretrain-gpt} in-process and returns what it printed. */
    static String runLogged(List<String> args) {
        PretrainOptions o = new PretrainOptions();
        new CommandLine(o).parseArgs(args.toArray(new String[0]));
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        new PretrainGpt(o, new PrintStream(bytes, true, StandardCharsets.UTF_8)).run();
        return bytes.toString(StandardCharsets.UTF_8);
    }

    static Path fixtures() {
        return Path.of(System.getProperty("djlm.repo.root", ".")).resolve("../shared/fixtures").toAbsolutePath().normalize();
    }
}
