package org.djlmegatron.comm;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.Socket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Supplier;
import org.djlmegatron.comm.Nodes.Outcome;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankGrid;
import org.junit.jupiter.api.Test;

/** The rendezvous, with "nodes" as threads of this JVM, each with its own sockets. */
class RendezvousTest {

    private static final Duration TIMEOUT = Duration.ofSeconds(10);
    private static final String JOB = "job";

    @Test
    void everyPairOfNodesGetsASocket() throws IOException {
        int port = Nodes.freePort();
        List<Outcome<Rendezvous.Links>> out = join(
                () -> Nodes.launch(2, 3, 0, port, TIMEOUT), () -> Nodes.launch(2, 3, 1, port, TIMEOUT),
                () -> Nodes.launch(2, 3, 2, port, TIMEOUT));
        for (int k = 0; k < 3; k++) {
            Rendezvous.Links links = out.get(k).orThrow().get(0);
            assertThat(links.sockets()[k]).isNull();
            for (int j = 0; j < 3; j++) {
                if (j != k) {
                    assertThat(links.sockets()[j].isConnected()).isTrue();
                }
            }
        }
        // the pair's two ends are one connection: a byte written on one end arrives at the other
        for (int a = 0; a < 3; a++) {
            for (int b = 0; b < 3; b++) {
                if (a != b) {
                    new DataOutputStream(out.get(a).orThrow().get(0).sockets()[b].getOutputStream()).writeByte(10 * a + b);
                }
            }
        }
        for (int a = 0; a < 3; a++) {
            for (int b = 0; b < 3; b++) {
                if (a != b) {
                    Socket s = out.get(b).orThrow().get(0).sockets()[a];
                    assertThat(new DataInputStream(s.getInputStream()).readByte()).isEqualTo((byte) (10 * a + b));
                }
            }
        }
        out.forEach(o -> closeAll(o.results().get(0)));
    }

    @Test
    void threeNodesRunACollective() {
        RankGrid grid = RankGrid.create(3, 1, 1, 1, 1);
        List<Float> sums = Nodes.allResults(Nodes.run(grid, 3, TIMEOUT, ctx -> ctx.group(GroupKind.DATA)
                .allReduce(ctx.manager().create(new float[] {ctx.rank() + 1}), ReduceOp.SUM)
                .getFloat()));
        assertThat(sums).containsExactly(6f, 6f, 6f);
    }

    @Test
    void duplicateNodeRanksFailEveryNode() {
        int port = Nodes.freePort();
        List<Outcome<Rendezvous.Links>> out = join(
                () -> Nodes.launch(1, 3, 0, port, TIMEOUT), () -> Nodes.launch(1, 3, 1, port, TIMEOUT),
                () -> Nodes.launch(1, 3, 1, port, TIMEOUT));
        for (Outcome<Rendezvous.Links> o : out) {
            assertThat(o.failure()).isInstanceOf(CollectiveException.class)
                    .hasMessageMatching("rendezvous failed: two nodes claim node rank 1: 127\\.0\\.0\\.1:\\d+ and"
                            + " 127\\.0\\.0\\.1:\\d+ \\(check NODE_RANK / RANK on every node\\)");
            assertThat(o.seconds()).isLessThan(5);
        }
        // a node that comes late hears the same instead of waiting for its timeout
        Outcome<Rendezvous.Links> late = join(() -> Nodes.launch(1, 3, 2, port, TIMEOUT)).get(0);
        assertThat(late.failure()).hasMessageContaining("two nodes claim node rank 1");
        assertThat(late.seconds()).isLessThan(5);
    }

    @Test
    void otherWorldSizesNprocRunIdsOrGridsFailEveryNode() {
        expectBothFail(3, 2, "test", JOB,
                "expects 3 nodes but node 0 expects 2 (check NNODES / WORLD_SIZE on every node)");
        expectBothFail(2, 1, "test", JOB,
                "runs 1 ranks per node but node 0 runs 2 (every node must use the same nproc-per-node)");
        expectBothFail(2, 2, "other-run", JOB, "belongs to run 'other-run' but node 0 to run 'test'");
        expectBothFail(2, 2, "test", "another job", "runs another job but node 0 runs job");
    }

    /** Node 0 runs 2 nodes x 2 ranks of "job"; node 1 runs the given settings. */
    private void expectBothFail(int nnodes, int nproc, String runId, String job, String message) {
        int port = Nodes.freePort();
        LaunchConfig master = Nodes.launch(2, 2, 0, port, TIMEOUT);
        LaunchConfig node1 = new LaunchConfig(nproc, nnodes, 1, "127.0.0.1", port, TIMEOUT, runId);
        List<Thread> threads = new ArrayList<>();
        Outcome<?>[] results = new Outcome<?>[2];
        LaunchConfig[] launches = {master, node1};
        String[] jobs = {JOB, job};
        for (int k = 0; k < 2; k++) {
            int node = k;
            threads.add(new Thread(() -> results[node] = attempt(launches[node], jobs[node])));
        }
        threads.forEach(Thread::start);
        threads.forEach(RendezvousTest::join);
        for (Outcome<?> o : results) {
            assertThat(o.failure()).as(message).isInstanceOf(CollectiveException.class)
                    .hasMessageStartingWith("rendezvous failed: the node at 127.0.0.1:")
                    .hasMessageContaining(message);
            assertThat(o.seconds()).isLessThan(5);
        }
    }

    @Test
    void aMissingNodeTimesOutOnEveryNodeThatCame() {
        int port = Nodes.freePort();
        Duration timeout = Duration.ofMillis(1500);
        List<Outcome<Rendezvous.Links>> out = join(
                () -> Nodes.launch(1, 3, 0, port, timeout), () -> Nodes.launch(1, 3, 1, port, timeout));
        for (Outcome<Rendezvous.Links> o : out) {
            assertThat(o.failure()).hasMessage("rendezvous failed: timed out after 1500 ms waiting for node(s) 2"
                    + " of 3 to join at port " + port + " (joined: 0, 1)");
            assertThat(o.seconds()).isBetween(1.0, 4.0);
        }
    }

    @Test
    void anUnreachableMasterTimesOut() {
        int port = Nodes.freePort();
        Outcome<Rendezvous.Links> o = join(() -> Nodes.launch(1, 2, 1, port, Duration.ofMillis(700))).get(0);
        assertThat(o.failure()).hasMessageStartingWith("rendezvous failed: node 1 could not reach 127.0.0.1:" + port
                + " (MASTER_ADDR:MASTER_PORT) within 700 ms: Connection refused");
        assertThat(o.seconds()).isBetween(0.6, 3.0);
    }

    @Test
    void aBusyMasterPortIsReported() throws IOException {
        try (java.net.ServerSocket busy = new java.net.ServerSocket(0)) {
            Outcome<Rendezvous.Links> o =
                    join(() -> Nodes.launch(1, 2, 0, busy.getLocalPort(), Duration.ofMillis(700))).get(0);
            assertThat(o.failure()).hasMessageStartingWith("rendezvous failed: node 0 cannot listen on MASTER_PORT="
                    + busy.getLocalPort() + " (is another node 0 or another job using it?)");
        }
    }

    @Test
    void strangersOnTheMasterPortAreIgnored() throws Exception {
        int port = Nodes.freePort();
        Thread stranger = new Thread(() -> {
            for (int i = 0; i < 50; i++) {
                try (Socket s = new Socket("127.0.0.1", port)) {
                    s.getOutputStream().write("GET / HTTP/1.0\r\n\r\n".getBytes());
                    return;
                } catch (IOException e) {
                    ThreadCollectivesTest.sleep(20);
                }
            }
        });
        stranger.start();
        List<Outcome<Rendezvous.Links>> out = join(
                () -> Nodes.launch(1, 2, 0, port, TIMEOUT), () -> {
                    join(stranger);
                    return Nodes.launch(1, 2, 1, port, TIMEOUT);
                });
        out.forEach(o -> closeAll(o.orThrow().get(0)));
    }

    // ---- helpers ----

    @SafeVarargs
    private static List<Outcome<Rendezvous.Links>> join(Supplier<LaunchConfig>... launches) {
        List<Outcome<Rendezvous.Links>> out = new ArrayList<>();
        List<Thread> threads = new ArrayList<>();
        for (int k = 0; k < launches.length; k++) {
            out.add(null);
            int i = k;
            threads.add(new Thread(() -> {
                Outcome<Rendezvous.Links> o = attempt(launches[i].get(), JOB);
                synchronized (out) {
                    out.set(i, o);
                }
            }));
        }
        threads.forEach(Thread::start);
        threads.forEach(RendezvousTest::join);
        synchronized (out) {
            return new ArrayList<>(out);
        }
    }

    private static Outcome<Rendezvous.Links> attempt(LaunchConfig launch, String job) {
        long start = System.nanoTime();
        try {
            return new Outcome<>(List.of(Rendezvous.join(launch, job)), null, Nodes.since(start));
        } catch (RuntimeException e) {
            return new Outcome<>(null, e, Nodes.since(start));
        }
    }

    private static void join(Thread t) {
        try {
            t.join(30_000);
        } catch (InterruptedException e) {
            throw new AssertionError(e);
        }
        assertThat(t.isAlive()).as("%s hangs", t.getName()).isFalse();
    }

    private static void closeAll(Rendezvous.Links links) {
        for (Socket s : links.sockets()) {
            if (s != null) {
                try {
                    s.close();
                } catch (IOException e) {
                    // closing anyway
                }
            }
        }
    }
}
