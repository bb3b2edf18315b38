package org.djlmegatron.pipeline;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.BiFunction;
import org.djlmegatron.comm.CollectiveException;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ThreadProcessGroup;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.Test;

/**
 * The runner's exchanges on thread ranks with strict (rendezvous) sends, as NCCL's: a pairing
 * that would deadlock on GPUs times out here. Each stage r computes y = w_r * x + r on a vector;
 * the last stage's loss is sum(y); gradients are written out by hand, so the test checks routing
 * (which micro-batch's activation reaches which pass) and the weight gradients against the
 * same chain run on one thread.
 */
class PipelineRunnerTest {

    private static final Duration TIMEOUT = Duration.ofSeconds(10);
    private static final Shape SHAPE = new Shape(3);

    private static float weight(int stage) {
        return 1.5f - 0.25f * stage;
    }

    private static float[] sample(int mb) {
        return new float[] {mb + 1, -mb, 0.5f * mb};
    }

    /** Per stage: sum over micro-batches of dLoss/dw_r, on one thread, without the runner. */
    private static double[] sequentialGradients(int stages, int microBatches) {
        double[] g = new double[stages];
        for (int m = 0; m < microBatches; m++) {
            for (float x0 : sample(m)) {
                double[] in = new double[stages];
                double x = x0;
                for (int r = 0; r < stages; r++) {
                    in[r] = x;
                    x = weight(r) * x + r;
                }
                double up = 1; // dLoss/dy of the last stage
                for (int r = stages - 1; r >= 0; r--) {
                    g[r] += up * in[r];
                    up *= weight(r);
                }
            }
        }
        return g;
    }

    /** One stage's work: the chain y = w x + r, with its gradients by hand. */
    private static class Chain implements PipelineRunner.StageWork {
        final int stage;
        final int stages;
        final NDManager manager;
        final Map<Integer, NDArray> inputs = new HashMap<>();
        final List<String> log = new ArrayList<>();
        double gradient;

        Chain(int stage, int stages, NDManager manager) {
            this.stage = stage;
            this.stages = stages;
            this.manager = manager;
        }

        @Override
        public NDArray forward(int mb, int chunk, NDArray input) {
            log.add("F" + mb);
            NDArray x = input == null ? manager.create(sample(mb)) : input;
            if (input == null && stage != 0) {
                throw new AssertionError("stage " + stage + " got no input for micro-batch " + mb);
            }
            inputs.put(mb, x);
            NDArray y = x.mul(weight(stage)).add(stage);
            return stage == stages - 1 ? null : y;
        }

        @Override
        public NDArray backward(int mb, int chunk, NDArray outputGradient) {
            log.add("B" + mb);
            NDArray up = outputGradient == null ? manager.ones(SHAPE) : outputGradient;
            gradient += up.mul(inputs.remove(mb)).sum().getFloat();
            return stage == 0 ? null : up.mul(weight(stage));
        }
    }

    private static <T> List<T> onThreads(int n, BiFunction<ProcessGroup, NDManager, T> body, boolean strict) {
        return onThreads(n, body, strict, TIMEOUT);
    }

    private static <T> List<T> onThreads(int n, BiFunction<ProcessGroup, NDManager, T> body, boolean strict,
            Duration timeout) {
        int[] ranks = new int[n];
        for (int i = 0; i < n; i++) {
            ranks[i] = i;
        }
        List<ThreadProcessGroup> group = ThreadProcessGroup.newGroup("pp" + java.util.Arrays.toString(ranks),
                ranks, timeout, strict);
        List<T> results = new ArrayList<>();
        List<AtomicReference<Object>> out = new ArrayList<>();
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            AtomicReference<Object> slot = new AtomicReference<>();
            out.add(slot);
            ProcessGroup g = group.get(i);
            Thread t = new Thread(() -> {
                try (NDManager m = NDManager.newBaseManager()) {
                    slot.set(body.apply(g, m));
                } catch (Throwable e) {
                    slot.set(e);
                }
            }, "stage-" + i);
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) {
            try {
                t.join(3 * timeout.toMillis());
            } catch (InterruptedException e) {
                throw new IllegalStateException(e);
            }
        }
        for (AtomicReference<Object> slot : out) {
            Object v = slot.get();
            if (v instanceof RuntimeException e) {
                throw e;
            }
            if (v instanceof Throwable e) {
                throw new AssertionError(e);
            }
            @SuppressWarnings("unchecked")
            T t = (T) v;
            results.add(t);
        }
        return results;
    }

    @ParameterizedTest
    @CsvSource({"2, 1", "2, 8", "3, 5", "4, 8", "4, 2", "1, 3"})
    void oneFOneBWithRendezvousSendsMatchesTheChainOnOneThread(int stages, int microBatches) {
        List<Chain> chains = onThreads(stages, (g, m) -> {
            Chain c = new Chain(g.rank(), stages, m);
            PipelineSchedule s = PipelineSchedule.training(stages, g.rank(), 1, microBatches);
            new PipelineRunner(g, SHAPE, DataType.FLOAT32).run(s, c, m);
            assertThat(String.join(" ", c.log)).isEqualTo(s.describe());
            return c;
        }, true);
        double[] expected = sequentialGradients(stages, microBatches);
        for (int r = 0; r < stages; r++) {
            assertThat(chains.get(r).gradient).as("stage %d", r).isCloseTo(expected[r], within(1e-4));
        }
    }

    @Test
    void forwardOnlyRunsEveryForwardAndNoBackward() {
        List<Chain> chains = onThreads(3, (g, m) -> {
            Chain c = new Chain(g.rank(), 3, m);
            new PipelineRunner(g, SHAPE, DataType.FLOAT32).run(PipelineSchedule.of(3, g.rank(), 1, 4, 3, true), c, m);
            return c;
        }, true);
        for (Chain c : chains) {
            assertThat(c.log).containsExactly("F0", "F1", "F2", "F3");
        }
    }

    @Test
    void strictSendsTurnAnExchangeThatOnlyEagerSendsSurviveIntoATimeoutNamingGroupRankAndOperation() {
        // both stages send first, then receive: fine with eager sends, a deadlock on NCCL
        BiFunction<ProcessGroup, NDManager, Float> sendFirst = (g, m) -> {
            int peer = 1 - g.rank();
            g.send(m.create(new float[] {g.rank()}), peer);
            return g.recv(m, new Shape(1), DataType.FLOAT32, peer).getFloat(0);
        };
        assertThat(onThreads(2, sendFirst, false)).containsExactly(1f, 0f);
        assertThatThrownBy(() -> onThreads(2, sendFirst, true, Duration.ofMillis(500)))
                .isInstanceOf(CollectiveException.class)
                .hasMessageContaining("group pp[0, 1]")
                .hasMessageContaining("send")
                .hasMessageContaining("to receive (strict sends)");
        // the batched exchange is the way out
        BiFunction<ProcessGroup, NDManager, Float> batched = (g, m) -> {
            int peer = 1 - g.rank();
            return g.sendRecv(m.create(new float[] {g.rank()}), peer, m, new Shape(1), DataType.FLOAT32, peer)
                    .getFloat(0);
        };
        assertThat(onThreads(2, batched, true)).containsExactly(1f, 0f);
    }

    @Test
    void aStageThatDiesMakesItsNeighbourFailWithinTheTimeoutNamingGroupRankAndOperation() {
        long t0 = System.nanoTime();
        assertThatThrownBy(() -> onThreads(2, (g, m) -> {
            Chain c = new Chain(g.rank(), 2, m) {
                @Override
                public NDArray forward(int mb, int chunk, NDArray input) {
                    if (stage == 1 && mb == 1) {
                        throw new IllegalStateException("stage 1 died");
                    }
                    return super.forward(mb, chunk, input);
                }
            };
            new PipelineRunner(g, SHAPE, DataType.FLOAT32).run(PipelineSchedule.training(2, g.rank(), 1, 4), c, m);
            return 0;
        }, true, Duration.ofMillis(500))) // rank 0's failure is reported first
                .isInstanceOf(CollectiveException.class)
                .hasMessageContaining("group pp[0, 1]: rank 0 (global 0)")
                .hasMessageContaining("timed out after 500 ms");
        assertThat((System.nanoTime() - t0) / 1e9).as("seconds, far below a hang").isLessThan(20.0);
    }

    /** Chunk c of rank r is virtual stage c p + r: the chain runs through p x v stages around the ring. */
    private static class InterleavedChain implements PipelineRunner.StageWork {
        final int rank;
        final int ranks;
        final int chunks;
        final NDManager manager;
        final Map<String, NDArray> inputs = new HashMap<>();
        final List<String> log = new ArrayList<>();
        final double[] gradient;

        InterleavedChain(int rank, int ranks, int chunks, NDManager manager) {
            this.rank = rank;
            this.ranks = ranks;
            this.chunks = chunks;
            this.manager = manager;
            this.gradient = new double[chunks];
        }

        private int stage(int chunk) {
            return chunk * ranks + rank;
        }

        @Override
        public NDArray forward(int mb, int chunk, NDArray input) {
            log.add("F" + mb + "." + chunk);
            int stage = stage(chunk);
            if ((input == null) != (stage == 0)) {
                throw new AssertionError("virtual stage " + stage + " got input " + input + " for micro-batch " + mb);
            }
            NDArray x = input == null ? manager.create(sample(mb)) : input;
            inputs.put(mb + "." + chunk, x);
            NDArray y = x.mul(weight(stage)).add(stage);
            return stage == ranks * chunks - 1 ? null : y;
        }

        @Override
        public NDArray backward(int mb, int chunk, NDArray outputGradient) {
            log.add("B" + mb + "." + chunk);
            int stage = stage(chunk);
            if ((outputGradient == null) != (stage == ranks * chunks - 1)) {
                throw new AssertionError("virtual stage " + stage + " got output gradient " + outputGradient);
            }
            NDArray up = outputGradient == null ? manager.ones(SHAPE) : outputGradient;
            gradient[chunk] += up.mul(inputs.remove(mb + "." + chunk)).sum().getFloat();
            return stage == 0 ? null : up.mul(weight(stage));
        }
    }

    /**
     * Megatron's interleaved exchanges with rendezvous sends: every pass gets the activation and
     * gradient of its own micro-batch and virtual stage (so the gradients equal the chain run on
     * one thread), in the schedule's order, without a deadlock, for group sizes Megatron accepts.
     */
    @ParameterizedTest
    @CsvSource({"2, 2, 8, 2", "2, 2, 5, 3", "2, 2, 4, 2", "2, 3, 6, 2", "3, 2, 6, 3", "4, 2, 8, 4", "4, 2, 4, 4",
            "2, 2, 2, 2", "2, 2, 8, 4", "2, 2, 8, 3", "2, 2, 8, 8", "2, 3, 8, 4", "3, 2, 9, 5", "4, 2, 8, 8",
            "4, 3, 12, 6"})
    void interleavedWithRendezvousSendsMatchesTheChainOnOneThread(int ranks, int chunks, int microBatches, int group) {
        List<InterleavedChain> chains = onThreads(ranks, (g, m) -> {
            InterleavedChain c = new InterleavedChain(g.rank(), ranks, chunks, m);
            PipelineSchedule s = PipelineSchedule.of(ranks, g.rank(), chunks, microBatches, group, false);
            new PipelineRunner(g, SHAPE, DataType.FLOAT32).run(s, c, m);
            assertThat(String.join(" ", c.log)).isEqualTo(s.describe());
            return c;
        }, true);
        double[] expected = sequentialGradients(ranks * chunks, microBatches);
        for (int r = 0; r < ranks; r++) {
            for (int c = 0; c < chunks; c++) {
                assertThat(chains.get(r).gradient[c]).as("rank %d chunk %d", r, c)
                        .isCloseTo(expected[c * ranks + r], within(1e-3 * Math.max(1, Math.abs(expected[c * ranks + r]))));
            }
        }
    }

    @Test
    void interleavedForwardOnlyRunsEveryForwardOfEveryChunk() {
        List<InterleavedChain> chains = onThreads(2, (g, m) -> {
            InterleavedChain c = new InterleavedChain(g.rank(), 2, 2, m);
            new PipelineRunner(g, SHAPE, DataType.FLOAT32).run(PipelineSchedule.of(2, g.rank(), 2, 4, 2, true), c, m);
            return c;
        }, true);
        for (InterleavedChain c : chains) {
            assertThat(c.log).containsExactly("F0.0", "F1.0", "F0.1", "F1.1", "F2.0", "F3.0", "F2.1", "F3.1");
        }
    }
}
