package org.djlmegatron.pretrain;

import java.io.IOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/** Runs {@code djl-megatron} commands in a separate JVM (a new process, as a user would). */
final class ForkedCli {

    private ForkedCli() {}

    static Process start(List<String> jvmProps, Map<String, String> env, Path log, String... args) throws IOException {
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.add("-Xmx2g");
        cmd.add("-Dai.djl.offline=true");
        cmd.addAll(jvmProps);
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add("org.djlmegatron.cli.Main");
        cmd.addAll(List.of(args));
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile());
        pb.environment().putAll(env);
        return pb.start();
    }

    /** Runs to completion (bounded), failing with the JVM's output when it does not exit 0. */
    static void run(Map<String, String> env, Path log, String... args) throws Exception {
        Process p = start(List.of(), env, log, args);
        if (!p.waitFor(300, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError("forked JVM timed out; output:\n" + Files.readString(log));
        }
        if (p.exitValue() != 0) {
            throw new AssertionError("forked JVM exited " + p.exitValue() + "; output:\n" + Files.readString(log));
        }
    }

    /**
     * Starts {@code pretrain-gpt args} as two nodes (two JVMs joined over TCP on a free local port,
     * collectives timing out after {@code timeoutSeconds}), node 0 writing {@code --metrics-out metrics}.
     * Each node's output goes to {@code dir/nodeN.log}.
     */
    static List<Process> startTwoNodes(Path dir, List<String> args, Path metrics, String timeoutSeconds)
            throws IOException {
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        List<Process> nodes = new ArrayList<>();
        for (int node = 0; node < 2; node++) {
            List<String> cli = new ArrayList<>(List.of("pretrain-gpt"));
            cli.addAll(args);
            if (node == 0) {
                cli.addAll(List.of("--metrics-out", metrics.toString()));
            }
            Map<String, String> env = Map.of("MASTER_ADDR", "127.0.0.1", "MASTER_PORT", Integer.toString(port),
                    "NNODES", "2", "NODE_RANK", Integer.toString(node), "DJLM_TIMEOUT_SECONDS", timeoutSeconds);
            nodes.add(start(List.of(), env, dir.resolve("node" + node + ".log"), cli.toArray(new String[0])));
        }
        return nodes;
    }

    /**
     * Runs {@code pretrain-gpt args} as two nodes ({@link #startTwoNodes}, 60 s collective timeout);
     * fails with a node's output when it does not exit 0 within 240 s.
     */
    static void runTwoNodes(Path dir, List<String> args, Path metrics) throws Exception {
        List<Process> nodes = startTwoNodes(dir, args, metrics, "60");
        for (int node = 0; node < 2; node++) {
            Process p = nodes.get(node);
            Path log = dir.resolve("node" + node + ".log");
            if (!p.waitFor(240, TimeUnit.SECONDS)) {
                nodes.forEach(Process::destroyForcibly);
                throw new AssertionError("node " + node + " timed out:\n" + Files.readString(log));
            }
            if (p.exitValue() != 0) {
                throw new AssertionError("node " + node + " exited " + p.exitValue() + "; output:\n" + Files.readString(log));
            }
        }
    }

    /** Per-iteration (loss, grad norm) from a --metrics-out file. */
    static List<double[]> metrics(Path jsonl) throws IOException {
        List<double[]> out = new ArrayList<>();
        for (String line : Files.readAllLines(jsonl)) {
            var o = com.google.gson.JsonParser.parseString(line).getAsJsonObject();
            out.add(new double[] {o.get("iteration").getAsDouble(), o.get("loss").getAsDouble(),
                o.get("grad_norm").getAsDouble()});
        }
        return out;
    }
}
