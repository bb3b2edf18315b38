package org.djlmegatron.cli;

import static org.djlmegatron.options.OptionChecks.nonNegative;
import static org.djlmegatron.options.OptionChecks.positive;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.Shape;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.ServerSocket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.Function;
import org.djlmegatron.comm.LaunchConfig;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.launch.DistributedWorld;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code bench-comm}: a data-parallel gradient buffer's reduction three ways on CPU ranks, in one
 * run: all-reduce of the whole buffer, reduce-scatter, and one {@code reduce} per owner slice (each
 * rank's 1/DP slice to that rank, as the distributed optimizer and ZeRO-2 need it). The ranks are
 * threads of one JVM, or several in-process nodes joined over TCP on loopback ({@code --nodes}).
 */
@Command(name = "bench-comm", mixinStandardHelpOptions = true,
        description = "Time a data-parallel reduction of an fp32 buffer as all-reduce, reduce-scatter and one reduce "
                + "per owner slice, on thread ranks or in-process nodes over TCP, with ratios from the same run.")
final class BenchCommCommand implements Callable<Integer> {

    @Option(names = "--elements", defaultValue = "4194304",
            description = "fp32 elements in the buffer, a multiple of --dp (default: ${DEFAULT-VALUE})")
    long elements;

    @Option(names = "--dp", defaultValue = "2", description = "data-parallel size (default: ${DEFAULT-VALUE})")
    int dp;

    @Option(names = "--nodes", defaultValue = "1",
            description = "in-process nodes joined over TCP on 127.0.0.1; 1: thread ranks only (default: ${DEFAULT-VALUE})")
    int nodes;

    @Option(names = "--warmup", defaultValue = "2", description = "untimed rounds (default: ${DEFAULT-VALUE})")
    int warmup;

    @Option(names = "--steps", defaultValue = "10", description = "timed rounds (default: ${DEFAULT-VALUE})")
    int steps;

    private static final Duration TIMEOUT = Duration.ofSeconds(300);
    private static final String[] WAYS = {"allReduce", "reduceScatter", "reduce per owner"};

    @Override
    public Integer call() {
        positive("--elements", elements);
        positive("--dp", dp);
        positive("--nodes", nodes);
        nonNegative("--warmup", warmup);
        positive("--steps", steps);
        if (elements % dp != 0) {
            throw new IllegalArgumentException("--elements must be a multiple of --dp " + dp + ", got " + elements);
        }
        if (dp % nodes != 0) {
            throw new IllegalArgumentException("--dp must be a multiple of --nodes " + nodes + ", got " + dp);
        }
        double[] seconds = onNodes(this::measure).get(0);
        System.out.printf("fp32 buffer of %d elements (%.1f MB), DP %d on %s; %d timed rounds after %d warm-up%n",
                elements, elements * 4 / 1e6, dp,
                nodes == 1 ? "thread ranks" : nodes + " in-process nodes over TCP (loopback)", steps, warmup);
        for (int w = 0; w < WAYS.length; w++) {
            System.out.printf("  %-17s %8.2f ms = %.2fx allReduce%n", WAYS[w], seconds[w] * 1e3 / steps,
                    seconds[w] / seconds[0]);
        }
        System.out.printf("  reduce per owner / reduceScatter: %.2fx%n", seconds[2] / seconds[1]);
        return 0;
    }

    /** Rank 0's seconds per way, summed over the timed rounds; every round starts and ends at a barrier. */
    private double[] measure(RankContext ctx) {
        ProcessGroup g = ctx.group(GroupKind.DATA);
        long slice = elements / dp;
        double[] seconds = new double[WAYS.length];
        try (NDManager m = ctx.manager().newSubManager()) {
            NDArray buffer = m.randomNormal(new Shape(elements));
            for (int round = 0; round < warmup + steps; round++) {
                for (int w = 0; w < WAYS.length; w++) {
                    g.barrier();
                    long start = System.nanoTime();
                    reduceOneWay(w, g, buffer, slice);
                    g.barrier();
                    if (round >= warmup) {
                        seconds[w] += (System.nanoTime() - start) / 1e9;
                    }
                }
            }
        }
        return seconds;
    }

    private static void reduceOneWay(int way, ProcessGroup g, NDArray buffer, long slice) {
        switch (way) {
            case 0 -> g.allReduce(buffer, ReduceOp.SUM).close();
            case 1 -> g.reduceScatter(buffer, 0, ReduceOp.SUM).close();
            default -> {
                for (int owner = 0; owner < g.size(); owner++) {
                    try (NDArray piece = buffer.get(new NDIndex("{}:{}", owner * slice, (owner + 1) * slice))) {
                        NDArray sum = g.reduce(piece, owner, ReduceOp.SUM);
                        if (sum != null) {
                            sum.close();
                        }
                    }
                }
            }
        }
    }

    /** Runs {@code body} on every rank of a DP grid, over {@code --nodes} in-process nodes; rank 0's result first. */
    private <T> List<T> onNodes(Function<RankContext, T> body) {
        RankGrid grid = RankGrid.create(dp, 1, 1, 1, 1);
        if (nodes == 1) {
            return DistributedWorld.run(grid, LaunchConfig.singleNode(dp, TIMEOUT), body);
        }
        int port = freePort();
        ExecutorService pool = Executors.newFixedThreadPool(nodes);
        try {
            List<Future<List<T>>> perNode = new ArrayList<>();
            for (int k = 0; k < nodes; k++) {
                LaunchConfig launch = new LaunchConfig(dp / nodes, nodes, k, "127.0.0.1", port, TIMEOUT);
                perNode.add(pool.submit(() -> DistributedWorld.run(grid, launch, body)));
            }
            List<T> all = new ArrayList<>();
            for (Future<List<T>> f : perNode) {
                all.addAll(f.get(30, TimeUnit.MINUTES)); // every collective inside has its own timeout too
            }
            return all;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while the nodes ran", e);
        } catch (ExecutionException e) {
            throw new IllegalStateException("a node failed: " + e.getCause(), e.getCause());
        } catch (TimeoutException e) {
            throw new IllegalStateException("the nodes did not finish within 30 minutes", e);
        } finally {
            pool.shutdownNow();
        }
    }

    private static int freePort() {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
