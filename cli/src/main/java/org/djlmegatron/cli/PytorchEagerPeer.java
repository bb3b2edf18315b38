package org.djlmegatron.cli;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * PyTorch eager's training step on the same model, run by {@code bench-train --vs-pytorch} in the
 * same run as ours: {@code djl-megatron/src/main/python/eager_gpt_train.py} under a python3 with
 * torch (Debian's {@code python3-torch}, the libtorch our native library is built against).
 */
final class PytorchEagerPeer {

    /** What the script measured. */
    record Result(double tokensPerS, double gflops, double matmulGflops, int threads, String torch) {}

    private final Path python;
    private final Path script;
    private final long timeoutSeconds;

    PytorchEagerPeer(Path python, long timeoutSeconds) {
        this.python = python;
        this.script = locateScript();
        this.timeoutSeconds = timeoutSeconds;
        if (!Files.isExecutable(python)) {
            throw new IllegalArgumentException("--python: expected an executable python3 with torch, found " + python);
        }
    }

    private static final Path SCRIPT = Path.of("djl-megatron", "src", "main", "python", "eager_gpt_train.py");

    /** The script in the source tree: found upwards from this class's jar or directory, else from the working directory. */
    private static Path locateScript() {
        List<Path> starts = new ArrayList<>();
        try {
            starts.add(Path.of(PytorchEagerPeer.class.getProtectionDomain().getCodeSource().getLocation().toURI()));
        } catch (java.net.URISyntaxException | RuntimeException e) {
            // no code source: the working directory below
        }
        starts.add(Path.of("").toAbsolutePath());
        for (Path start : starts) {
            for (Path d = start; d != null; d = d.getParent()) {
                if (Files.isRegularFile(d.resolve(SCRIPT))) {
                    return d.resolve(SCRIPT);
                }
            }
        }
        throw new IllegalArgumentException("--vs-pytorch: the PyTorch peer script " + SCRIPT
                + " was not found above " + starts);
    }

    Result run(int layers, int hidden, int heads, int seq, int micro, int vocab, int microBatches, int iters,
            int threads, boolean bf16, Path profile) {
        List<String> cmd = new ArrayList<>(List.of(python.toString(), script.toString(),
                "--num-layers", "" + layers, "--hidden-size", "" + hidden, "--num-attention-heads", "" + heads,
                "--seq-length", "" + seq, "--micro-batch-size", "" + micro, "--vocab-size", "" + vocab,
                "--micro-batches", "" + microBatches, "--iters", "" + iters, "--threads", "" + threads));
        if (bf16) {
            cmd.add("--bf16");
        }
        if (profile != null) {
            cmd.addAll(List.of("--profile", profile.toString()));
        }
        int exit;
        try {
            Path log = Files.createTempFile("bench-train-pytorch", ".log"); // a file: no pipe to fill and block on
            String text;
            try {
                Process proc = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
                if (!proc.waitFor(timeoutSeconds, TimeUnit.SECONDS)) {
                    proc.destroyForcibly();
                    throw new IllegalStateException("PyTorch peer did not finish within " + timeoutSeconds
                            + " s (--pytorch-timeout): " + String.join(" ", cmd));
                }
                text = Files.readString(log, StandardCharsets.UTF_8).strip();
                exit = proc.exitValue();
            } finally {
                Files.deleteIfExists(log);
            }
            String last = text.substring(text.lastIndexOf('\n') + 1);
            if (exit != 0 || !last.startsWith("{")) {
                throw new IllegalStateException("PyTorch peer failed (exit " + exit + "): "
                        + String.join(" ", cmd) + ": " + last);
            }
            JsonObject j = JsonParser.parseString(last).getAsJsonObject();
            return new Result(j.get("tokens_per_s").getAsDouble(), j.get("gflops").getAsDouble(),
                    j.get("matmul_gflops").getAsDouble(), j.get("threads").getAsInt(), j.get("torch").getAsString());
        } catch (IOException e) {
            throw new IllegalStateException("PyTorch peer could not start: " + String.join(" ", cmd) + ": " + e.getMessage(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while waiting for the PyTorch peer", e);
        }
    }
}
