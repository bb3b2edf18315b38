package org.djlmegatron.comm;

import org.djlmegatron.launch.DistributedWorld;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.ServerSocket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;

/** Several "nodes" of one world simulated in this JVM: one DistributedWorld per thread. */
final class Nodes {

    /** What one node's {@code DistributedWorld.run} did. */
    record Outcome<T>(List<T> results, Throwable failure, double seconds) {
        List<T> orThrow() {
            if (failure != null) {
                throw new AssertionError("node failed: " + failure, failure);
            }
            return results;
        }
    }

    private Nodes() {}

    static int freePort() {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    static LaunchConfig launch(int nproc, int nnodes, int node, int port, Duration timeout) {
        return new LaunchConfig(nproc, nnodes, node, "127.0.0.1", port, timeout, "test");
    }

    /** Runs {@code nnodes} nodes of {@code nproc} ranks each; waits for all of them. */
    static <T> List<Outcome<T>> run(RankGrid grid, int nnodes, Duration timeout, Function<RankContext, T> body) {
        int port = freePort();
        int nproc = grid.worldSize() / nnodes;
        List<LaunchConfig> launches = new ArrayList<>();
        for (int k = 0; k < nnodes; k++) {
            launches.add(launch(nproc, nnodes, k, port, timeout));
        }
        return run(grid, launches, body);
    }

    /** Runs one node per launch, all at once; waits for all of them. */
    static <T> List<Outcome<T>> run(RankGrid grid, List<LaunchConfig> launches, Function<RankContext, T> body) {
        List<Outcome<T>> outcomes = new ArrayList<>();
        List<Thread> threads = new ArrayList<>();
        for (int k = 0; k < launches.size(); k++) {
            outcomes.add(null);
            int node = k;
            Thread t = new Thread(() -> {
                long start = System.nanoTime();
                Outcome<T> o;
                try {
                    o = new Outcome<>(DistributedWorld.run(grid, launches.get(node), body), null, since(start));
                } catch (Throwable e) {
                    o = new Outcome<>(null, e, since(start));
                }
                synchronized (outcomes) {
                    outcomes.set(node, o);
                }
            }, "node-" + k);
            t.setDaemon(true);
            threads.add(t);
        }
        threads.forEach(Thread::start);
        for (Thread t : threads) {
            try {
                t.join(TimeUnit.SECONDS.toMillis(60));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new AssertionError(e);
            }
            if (t.isAlive()) {
                throw new AssertionError(t.getName() + " hangs");
            }
        }
        synchronized (outcomes) {
            return new ArrayList<>(outcomes);
        }
    }

    /** Every node's results, concatenated in node order (= global rank order). */
    static <T> List<T> allResults(List<Outcome<T>> outcomes) {
        List<T> all = new ArrayList<>();
        for (Outcome<T> o : outcomes) {
            all.addAll(o.orThrow());
        }
        return all;
    }

    static double since(long start) {
        return (System.nanoTime() - start) / 1e9;
    }
}
