package org.djlmegatron.comm;

import org.djlmegatron.launch.DistributedWorld;
import org.djlmegatron.launch.LocalWorld;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.fail;

import java.io.IOException;
import java.io.ObjectInputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Real JVMs: each node is a separate java process (MultiJvmNode) on loopback. */
class MultiJvmTest {

    private static final int PROCESS_SECONDS = 90;

    @TempDir
    Path dir;

    @Test
    void twoJvmsOfTwoRanksGiveBitIdenticalResultsToOneJvmOfFour() throws Exception {
        List<String> scenarios = List.of("train-tp2-dp2", "collectives-tp4");
        List<String> args = new ArrayList<>();
        for (String s : scenarios) {
            args.add(s + "=" + Nodes.freePort());
        }
        int master = Nodes.freePort();
        List<Process> nodes = new ArrayList<>();
        for (int k = 0; k < 2; k++) {
            nodes.add(startNode(k, master, args));
        }
        // meanwhile, the reference: one JVM (this one), four thread ranks
        Map<String, List<Map<String, byte[]>>> expected = new java.util.LinkedHashMap<>();
        for (String s : scenarios) {
            expected.put(s, LocalWorld.run(MultiJvmNode.grid(s), Duration.ofSeconds(30), MultiJvmNode.body(s)));
        }
        List<Map<String, List<Map<String, byte[]>>>> got = new ArrayList<>();
        for (int k = 0; k < 2; k++) {
            awaitExit(nodes.get(k), k, 0);
            got.add(read(dir.resolve("node" + k + ".out")));
        }
        for (String s : scenarios) {
            List<Map<String, byte[]>> all = new ArrayList<>(got.get(0).get(s)); // ranks 0, 1
            all.addAll(got.get(1).get(s));                                       // ranks 2, 3
            DistributedWorldTest.assertSameBytes(all, expected.get(s));
        }
        assertThat(expected.get("train-tp2-dp2").get(0)).containsKey("step 3 loss");
    }

    @Test
    void aNodeWhoseProcessDiesFailsTheOtherPromptly() throws Exception {
        int master = Nodes.freePort();
        Process dying = startNode(1, master, List.of("die=" + master));
        LaunchConfig node0 = new LaunchConfig(2, 2, 0, "127.0.0.1", master, Duration.ofSeconds(30), "multi-jvm-test");
        long start = System.nanoTime();
        Throwable failure = null;
        try {
            DistributedWorld.run(MultiJvmNode.grid("die"), node0, MultiJvmNode.body("die"));
        } catch (RuntimeException e) {
            failure = e;
        }
        double seconds = Nodes.since(start);
        awaitExit(dying, 1, 3);
        if (failure == null) {
            fail("node 0 did not notice that node 1 died");
        }
        assertThat(failure).isInstanceOf(CollectiveException.class)
                .hasMessageMatching("node 0 lost connection to node 1 \\(127\\.0\\.0\\.1:\\d+\\): .+"
                        + " \\(did its process exit\\?\\); rank \\d here was in group (dp|tp)\\[.*\\]: rank \\d "
                        + "\\(global \\d\\) (allReduce|barrier)");
        // the ranks blocked in a collective with node 1 failed naming the group, rank, op and node
        assertThat(failure.getSuppressed()).isNotEmpty().allSatisfy(s -> assertThat(s.getCause())
                .isInstanceOf(CollectiveException.class)
                .hasMessageMatching("(?s)group (dp|tp)\\[.*\\]: rank \\d \\(global \\d\\) (allReduce|barrier): aborted:"
                        + " node 0 lost connection to node 1 .*"));
        assertThat(seconds).as("seconds until node 0 failed").isLessThan(15);
    }

    private Process startNode(int node, int masterPort, List<String> scenarioArgs) throws IOException {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(java, "-Xmx1g", "-XX:+UseSerialGC", "-Dai.djl.offline=true",
                "-cp", System.getProperty("java.class.path"), MultiJvmNode.class.getName(),
                dir.resolve("node" + node + ".out").toString()));
        cmd.addAll(scenarioArgs);
        ProcessBuilder pb = new ProcessBuilder(cmd);
        Map<String, String> env = pb.environment();
        // whatever launched the tests (Slurm, torchrun) must not leak into the nodes
        env.keySet().removeIf(k -> k.startsWith("SLURM_") || k.startsWith("TORCHELASTIC_")
                || List.of("WORLD_SIZE", "RANK", "GROUP_RANK", "NODE_RANK", "NNODES", "MASTER_ADDR",
                        "MASTER_PORT", "LOCAL_RANK").contains(k));
        env.put("MASTER_ADDR", "127.0.0.1");
        env.put("MASTER_PORT", Integer.toString(masterPort));
        env.put("NNODES", "2");
        env.put("NODE_RANK", Integer.toString(node));
        env.put("TORCHELASTIC_RUN_ID", "multi-jvm-test");
        env.put("DJLM_TIMEOUT_SECONDS", "30");
        pb.redirectErrorStream(true);
        pb.redirectOutput(dir.resolve("node" + node + ".log").toFile());
        return pb.start();
    }

    private void awaitExit(Process p, int node, int expectedCode) throws Exception {
        if (!p.waitFor(PROCESS_SECONDS, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            fail("node " + node + " did not finish in " + PROCESS_SECONDS + " s; its log:\n" + log(node));
        }
        assertThat(p.exitValue()).as("exit code of node %d; its log:\n%s", node, log(node)).isEqualTo(expectedCode);
    }

    private String log(int node) throws IOException {
        Path log = dir.resolve("node" + node + ".log");
        if (!Files.exists(log)) {
            return "(none)";
        }
        String s = Files.readString(log);
        return s.length() > 8000 ? s.substring(s.length() - 8000) : s;
    }

    @SuppressWarnings("unchecked")
    private static Map<String, List<Map<String, byte[]>>> read(Path file) throws Exception {
        try (ObjectInputStream in = new ObjectInputStream(Files.newInputStream(file))) {
            return (Map<String, List<Map<String, byte[]>>>) in.readObject();
        }
    }
}
