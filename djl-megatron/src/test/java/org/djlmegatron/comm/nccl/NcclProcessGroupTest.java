package org.djlmegatron.comm.nccl;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Function;
import org.djlmegatron.comm.CollectiveException;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * {@link NcclProcessGroup} over {@link FakeNccl} on CPU thread ranks: everything but the library
 * itself (pointers, axes, chunking, dtype and op mapping, the unique id over the CPU group, call
 * agreement, polling, timeouts, aborts, error strings).
 */
class NcclProcessGroupTest {

    private static final Duration TIMEOUT = Duration.ofSeconds(20);
    private static final Duration SHORT = Duration.ofMillis(400);
    private static final List<DataType> TYPES = List.of(DataType.FLOAT32, DataType.FLOAT16, DataType.FLOAT64,
            DataType.INT32, DataType.INT64, DataType.INT8, DataType.UINT8);

    static RankGrid tensorOnly(int n) {
        return RankGrid.create(n, n, 1, 1, 1);
    }

    /** Runs body on n thread ranks, each with a NCCL group over the fake, bootstrapped over the tensor group. */
    static <T> List<T> onNccl(int n, FakeNccl fake, Duration timeout, Function<Ranked, T> body) {
        return LocalWorld.run(tensorOnly(n), TIMEOUT, ctx -> {
            NcclProcessGroup g = new NcclProcessGroup(ctx.tensorGroup(), Device.cpu(), timeout, fake, reason -> {});
            try {
                return body.apply(new Ranked(ctx, g));
            } finally {
                g.abort("test over");
            }
        });
    }

    record Ranked(RankContext ctx, NcclProcessGroup nccl) {}

    /** Every collective, dtype and several axes, on inexact inputs, contiguous and strided. */
    static Map<String, byte[]> everything(ProcessGroup g, NDManager m, int rank) {
        int n = g.size();
        Map<String, byte[]> out = new LinkedHashMap<>();
        for (DataType type : TYPES) {
            try (NDManager s = m.newSubManager()) {
                NDArray x = random(s, rank * 31 + type.ordinal(), new Shape(2 * n, 3, 2 * n), type);
                NDArray t = random(s, rank * 17 + type.ordinal(), new Shape(3, 2 * n, 2 * n), type).transpose(2, 0, 1);
                byte[] before = x.toByteArray();
                String p = type + " ";
                for (ReduceOp op : ReduceOp.values()) {
                    out.put(p + "allReduce " + op, bytes(g.allReduce(x, op), m));
                }
                out.put(p + "allReduce strided", bytes(g.allReduce(t, ReduceOp.SUM), m));
                for (int axis : new int[] {0, 1, 2, -1}) {
                    out.put(p + "allGather " + axis, bytes(g.allGather(x, axis), m));
                }
                out.put(p + "allGather strided", bytes(g.allGather(t, 1), m));
                for (int axis : new int[] {0, 2}) {
                    for (ReduceOp op : ReduceOp.values()) {
                        out.put(p + "reduceScatter " + axis + " " + op, bytes(g.reduceScatter(x, axis, op), m));
                    }
                }
                out.put(p + "reduceScatter strided", bytes(g.reduceScatter(t, 2, ReduceOp.SUM), m));
                out.put(p + "broadcast 0", bytes(g.broadcast(x, 0), m));
                out.put(p + "broadcast last strided", bytes(g.broadcast(t, n - 1), m));
                for (int[] axes : new int[][] {{0, 0}, {0, 2}, {2, 0}, {2, 1}, {-1, -1}}) {
                    out.put(p + "allToAll " + axes[0] + "," + axes[1], bytes(g.allToAll(x, axes[0], axes[1]), m));
                }
                out.put(p + "allToAll strided", bytes(g.allToAll(t, 2, 1), m));
                g.barrier();
                if (n > 1) {
                    // two messages around the ring; even members send first, odd ones receive first:
                    // NCCL's point-to-point is stream-ordered, so a ring where everybody sends twice
                    // before receiving would wait for itself
                    int next = (g.rank() + 1) % n;
                    int prev = (g.rank() + n - 1) % n;
                    if (g.rank() % 2 == 0) {
                        g.send(x, next);
                        g.send(t, next);
                    }
                    out.put(p + "recv 1", bytes(g.recv(s, x.getShape(), type, prev), m));
                    out.put(p + "recv 2", bytes(g.recv(s, t.getShape(), type, prev), m));
                    if (g.rank() % 2 == 1) {
                        g.send(x, next);
                        g.send(t, next);
                    }
                    g.barrier(); // the last sends are received before anybody moves on
                }
                assertThat(x.toByteArray()).as("input untouched").isEqualTo(before);
            }
        }
        return out;
    }

    /** The result's shape and bytes; it must belong to the caller's manager tree and need no gradient. */
    static byte[] bytes(NDArray y, NDManager caller) {
        assertThat(y.hasGradient()).isFalse();
        NDManager owner = y.getManager();
        while (owner != null && owner != caller) {
            owner = owner.getParentManager();
        }
        assertThat(owner).as("attached to the caller's manager").isSameAs(caller);
        byte[] shape = y.getShape().toString().getBytes();
        byte[] data = y.toByteArray();
        byte[] all = new byte[shape.length + data.length];
        System.arraycopy(shape, 0, all, 0, shape.length);
        System.arraycopy(data, 0, all, shape.length, data.length);
        return all;
    }

    static NDArray random(NDManager m, long seed, Shape shape, DataType type) {
        Random random = new Random(seed);
        double[] v = new double[(int) shape.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = type.isFloating() ? random.nextGaussian() * Math.pow(10, random.nextInt(5) - 2)
                    : random.nextInt(type == DataType.UINT8 ? 256 : 200) - (type == DataType.UINT8 ? 0 : 100);
        }
        NDArray d = m.create(v, shape);
        return type == DataType.FLOAT64 ? d : d.toType(type, false);
    }

    @ParameterizedTest(name = "group of {0}")
    @ValueSource(ints = {1, 2, 4})
    void bitIdenticalToTheThreadBackend(int n) {
        FakeNccl fake = new FakeNccl();
        List<Map<String, byte[]>[]> runs = onNccl(n, fake, TIMEOUT, r -> {
            NDManager m = r.ctx().manager();
            @SuppressWarnings("unchecked")
            Map<String, byte[]>[] both = new Map[] {
                everything(r.ctx().tensorGroup(), m, r.ctx().rank()), everything(r.nccl(), m, r.ctx().rank())
            };
            return both;
        });
        for (int rank = 0; rank < n; rank++) {
            Map<String, byte[]> threads = runs.get(rank)[0];
            Map<String, byte[]> nccl = runs.get(rank)[1];
            assertThat(nccl.keySet()).containsExactlyElementsOf(threads.keySet());
            for (String key : threads.keySet()) {
                assertThat(nccl.get(key)).as("rank %d: %s", rank, key).isEqualTo(threads.get(key));
            }
        }
        assertThat(fake.initialised()).as("one communicator per member").isEqualTo(n);
        assertThat(fake.aborts()).hasSize(n); // the test's own abort at the end
    }

    @Test
    void closeFinalizesAndDestroysTheCommunicator() {
        FakeNccl fake = new FakeNccl();
        List<String> after = LocalWorld.run(tensorOnly(2), TIMEOUT, ctx -> {
            NcclProcessGroup g = new NcclProcessGroup(ctx.tensorGroup(), Device.cpu(), TIMEOUT, fake, reason -> {});
            g.allReduce(ctx.manager().create(new float[] {1, 2}), ReduceOp.SUM);
            g.close();
            try {
                g.barrier();
                return "no failure";
            } catch (CollectiveException e) {
                return e.getMessage();
            }
        });
        assertThat(fake.destroyed()).isEqualTo(2);
        assertThat(fake.aborts()).isEmpty();
        assertThat(after.get(0)).isEqualTo("group tp[0,1]: rank 0 (global 0) barrier: aborted: the group is closed");
    }

    @Test
    void workThatNeverFinishesTimesOutAndAborts() {
        FakeNccl fake = new FakeNccl();
        List<String> messages = onNccl(2, fake, SHORT, r -> {
            NDArray x = r.ctx().manager().create(new float[] {1, 2, 3});
            r.nccl().barrier(); // set up the communicator first
            fake.hangWork();
            long start = System.nanoTime();
            CollectiveException e = expectFailure(() -> r.nccl().allReduce(x, ReduceOp.SUM));
            assertThat(System.nanoTime() - start).isLessThan(TimeUnit.SECONDS.toNanos(10));
            assertThat(expectFailure(() -> r.nccl().allReduce(x, ReduceOp.SUM)).getMessage())
                    .as("later calls fail at once").contains("aborted: ").contains("timed out after 400 ms");
            return e.getMessage();
        });
        assertThat(messages.get(1)).isEqualTo("group tp[0,1]: rank 1 (global 1) allReduce: timed out after 400 ms "
                + "waiting for the NCCL allReduce to finish (a member may be stuck, gone, or calling something else)"
                + " (group aborted)");
        assertThat(fake.aborts()).containsExactlyInAnyOrder("rank 0 of 2", "rank 1 of 2");
    }

    @Test
    void theWatchdogAbortsQueuedWorkThatNeverFinishes() throws InterruptedException {
        FakeNccl fake = new FakeNccl();
        CountDownLatch reported = new CountDownLatch(1);
        AtomicReference<String> reason = new AtomicReference<>();
        List<String> messages = LocalWorld.run(tensorOnly(1), TIMEOUT, ctx -> {
            // as on CUDA: calls return once the work is queued
            NcclProcessGroup g = new NcclProcessGroup(ctx.tensorGroup(), Device.cpu(), SHORT, fake, r -> {
                reason.set(r);
                reported.countDown();
            }, false);
            NDArray x = ctx.manager().create(new int[] {7});
            g.barrier();
            fake.hangWork();
            g.allReduce(x, ReduceOp.MAX); // returns: the watchdog waits for it
            try {
                assertThat(reported.await(10, TimeUnit.SECONDS)).as("the watchdog reported").isTrue();
            } catch (InterruptedException e) {
                throw new AssertionError(e);
            }
            return expectFailure(() -> g.allGather(x, 0)).getMessage();
        });
        assertThat(reason.get()).isEqualTo("group tp[0]: rank 0 (global 0) allReduce: timed out after 400 ms waiting "
                + "for the NCCL allReduce to finish (a member may be stuck, gone, or calling something else)");
        assertThat(messages.get(0)).isEqualTo("group tp[0]: rank 0 (global 0) allGather: aborted: " + reason.get());
        assertThat(fake.aborts()).containsExactly("rank 0 of 1");
    }

    @Test
    void aCommunicatorThatNeverBecomesReadyTimesOut() {
        FakeNccl fake = new FakeNccl().hangInit();
        List<String> messages = onNccl(2, fake, SHORT,
                r -> expectFailure(() -> r.nccl().allGather(r.ctx().manager().create(new long[] {1}), 0)).getMessage());
        assertThat(messages.get(0)).isEqualTo("group tp[0,1]: rank 0 (global 0) allGather: setting up the NCCL "
                + "communicator of 2 rank(s) (fake NCCL on host memory) timed out after 400 ms (every member must reach "
                + "this call; is one stuck or gone?) (group aborted)");
        assertThat(fake.aborts()).hasSize(2);
    }

    @Test
    void asynchronousErrorsCarryNcclsErrorStrings() {
        FakeNccl fake = new FakeNccl();
        // The error is injected only once both ranks have left the NCCL barrier; otherwise the slower
        // rank's barrier itself can see it, and fails instead of the allReduce under test.
        CyclicBarrier bothOut = new CyclicBarrier(2);
        List<String> messages = onNccl(2, fake, TIMEOUT, r -> {
            NDArray x = r.ctx().manager().create(new float[] {1});
            r.nccl().allReduce(x, ReduceOp.SUM);
            r.nccl().barrier();
            await(bothOut);
            if (r.ctx().rank() == 0) {
                fake.failAsync(Nccl.REMOTE_ERROR, "socket closed by peer 10.0.0.2");
            }
            await(bothOut);
            return expectFailure(() -> r.nccl().allReduce(x, ReduceOp.SUM)).getMessage();
        });
        assertThat(messages.get(0)).isEqualTo("group tp[0,1]: rank 0 (global 0) allReduce: NCCL reported an "
                + "asynchronous error before this call: remote process exited or there was a network error "
                + "(ncclResult 6): socket closed by peer 10.0.0.2 (group aborted)");
    }

    @Test
    void mismatchedCallsFailEveryMemberNamingBothCalls() {
        List<String> messages = onNccl(2, new FakeNccl(), TIMEOUT, r -> {
            NDArray x = r.ctx().manager().zeros(new Shape(2 + r.ctx().rank(), 3));
            return expectFailure(() -> r.nccl().allReduce(x, ReduceOp.SUM)).getMessage();
        });
        String table = "members called different collectives (or shapes/dtypes) at call #0 of group tp[0,1]: "
                + "rank 0 (global 0): allReduce(SUM) float32 (2, 3); rank 1 (global 1): allReduce(SUM) float32 (3, 3)";
        assertThat(messages.get(0)).isEqualTo("group tp[0,1]: rank 0 (global 0) allReduce: " + table
                + " (group aborted)");
        assertThat(messages.get(1)).isEqualTo("group tp[0,1]: rank 1 (global 1) allReduce: " + table
                + " (group aborted)");

        List<String> ops = onNccl(2, new FakeNccl(), TIMEOUT, r -> {
            NDArray x = r.ctx().manager().zeros(new Shape(2, 2), DataType.INT32);
            return expectFailure(() -> {
                if (r.ctx().rank() == 0) {
                    r.nccl().allGather(x, 1);
                } else {
                    r.nccl().reduceScatter(x, 1, ReduceOp.MIN);
                }
            }).getMessage();
        });
        assertThat(ops.get(1)).contains("rank 0 (global 0): allGather(axis=1) int32 (2, 2); "
                + "rank 1 (global 1): reduceScatter(axis=1, MIN) int32 (2, 2)");
    }

    @Test
    void aReceiveOfTheWrongShapeFailsNamingBoth() {
        List<String> messages = onNccl(2, new FakeNccl(), TIMEOUT, r -> {
            r.nccl().barrier(); // the communicator exists: the sender does not wait for the receiver's setup
            if (r.ctx().rank() == 0) {
                r.nccl().send(r.ctx().manager().zeros(new Shape(2, 2)), 1);
                return "sent";
            }
            return expectFailure(() -> r.nccl().recv(r.ctx().manager(), new Shape(3, 3), DataType.FLOAT32, 0))
                    .getMessage();
        });
        assertThat(messages.get(1)).isEqualTo("group tp[0,1]: rank 1 (global 1) recv: expected float32 (3, 3) from "
                + "rank 0 (global 0) but it sent float32 (2, 2) (group aborted)");
    }

    @Test
    void batchedExchangesRunAsOneGroupInBothDirectionsAndAroundARing() {
        FakeNccl fake = new FakeNccl();
        List<float[]> received = onNccl(3, fake, TIMEOUT, r -> {
            NDManager m = r.ctx().manager();
            int me = r.ctx().rank();
            int next = (me + 1) % 3;
            int prev = (me + 2) % 3;
            // a pipeline stage's step: activations to the next, gradients to the previous, both received
            NDArray[] got = r.nccl().batchSendRecv(
                    new NDArray[] {m.create(new float[] {me, 10 + me}), m.create(new float[] {100 + me, 110 + me})},
                    new int[] {next, prev}, m, new Shape(2), DataType.FLOAT32, new int[] {prev, next});
            NDArray pair = r.nccl().sendRecv(m.create(new float[] {1000 + me, 0}).reshape(2), next, m, new Shape(2),
                    DataType.FLOAT32, prev);
            return new float[] {got[0].getFloat(0), got[0].getFloat(1), got[1].getFloat(0), got[1].getFloat(1),
                pair.getFloat(0)};
        });
        assertThat(received.get(0)).containsExactly(2, 12, 101, 111, 1002);
        assertThat(received.get(1)).containsExactly(0, 10, 102, 112, 1000);
        assertThat(received.get(2)).containsExactly(1, 11, 100, 110, 1001);
        assertThat(fake.groupCalls()).as("one NCCL group per rank and exchange").isEqualTo(6);
    }

    /**
     * The variable-split exchange of expert parallelism: uneven and empty splits (a member that
     * moves no rows at all included) give the thread backend's result bit for bit, as one NCCL group
     * per member of exactly the rows each pair exchanges: no collective, nothing padded.
     */
    @ParameterizedTest(name = "group of {0}")
    @ValueSource(ints = {2, 4})
    void variableSplitAllToAllSendsExactCountsInOneGroup(int n) {
        FakeNccl fake = new FakeNccl();
        long[][] counts = new long[n][n]; // counts[i][j]: rows i sends j; the last member sends and receives none
        long rows = 0;
        for (int i = 0; i < n - 1; i++) {
            for (int j = 0; j < n - 1; j++) {
                counts[i][j] = (3 * i + 5 * j + 1) % 4;
                rows += counts[i][j];
            }
        }
        List<byte[][]> runs = onNccl(n, fake, TIMEOUT, r -> {
            NDManager m = r.ctx().manager();
            int me = r.ctx().rank();
            long[] send = counts[me];
            long[] recv = new long[n];
            for (int j = 0; j < n; j++) {
                recv[j] = counts[j][me];
            }
            NDArray x = random(m, me, new Shape(java.util.Arrays.stream(send).sum(), 2, 3), DataType.FLOAT32);
            long max = java.util.Arrays.stream(counts).flatMapToLong(java.util.Arrays::stream).max().orElse(0);
            byte[] nccl = bytes(r.nccl().allToAllV(x, send, recv, max), m);
            return new byte[][] {nccl, bytes(r.ctx().tensorGroup().allToAllV(x, send, recv, max), m)};
        });
        for (int rank = 0; rank < n; rank++) {
            assertThat(runs.get(rank)[0]).as("rank %d", rank).isEqualTo(runs.get(rank)[1]);
        }
        assertThat(fake.sentElements()).as("exactly the rows exchanged, 6 elements each").isEqualTo(rows * 6);
        assertThat(fake.groupCalls()).as("one NCCL group per member that moves rows").isEqualTo(n - 1);
        assertThat(fake.collectives()).as("no collective (no padded all-to-all)").isZero();
        assertThat(fake.initialised()).as("a communicator for every member").isEqualTo(n);
    }

    @Test
    void variableSplitCountsThatDoNotMatchFailEveryMemberNamingThem() {
        List<String> messages = onNccl(2, new FakeNccl(), TIMEOUT, r -> {
            NDArray x = r.ctx().manager().zeros(new Shape(2, 3));
            long[] recv = r.ctx().rank() == 0 ? new long[] {1, 1} : new long[] {1, 2};
            return expectFailure(() -> r.nccl().allToAllV(x, new long[] {1, 1}, recv, 2)).getMessage();
        });
        for (int rank = 0; rank < 2; rank++) {
            assertThat(messages.get(rank)).as("rank %d", rank).contains("allToAllV: rank 1 (global 1) sends 1 rows to "
                    + "rank 1 (global 1), which expects 2");
        }
    }

    @Test
    void aBatchedReceiveOfTheWrongShapeFailsNamingBoth() {
        List<String> messages = onNccl(2, new FakeNccl(), TIMEOUT, r -> {
            NDManager m = r.ctx().manager();
            int peer = 1 - r.ctx().rank();
            Shape expected = r.ctx().rank() == 0 ? new Shape(2) : new Shape(3);
            return expectFailure(() -> r.nccl().batchSendRecv(new NDArray[] {m.zeros(new Shape(2))}, new int[] {peer},
                    m, expected, DataType.FLOAT32, new int[] {peer})).getMessage();
        });
        assertThat(messages.get(1)).isEqualTo("group tp[0,1]: rank 1 (global 1) batchSendRecv: expected float32 (3) "
                + "from rank 0 (global 0) but it sent float32 (2) (group aborted)");
    }

    @Test
    void aMemberThatNeverCallsTimesOutOverTheCpuGroup() {
        List<String> messages = LocalWorld.run(tensorOnly(2), SHORT, ctx -> {
            NcclProcessGroup g = new NcclProcessGroup(ctx.tensorGroup(), Device.cpu(), SHORT, new FakeNccl(), r -> {});
            if (ctx.rank() == 1) {
                return "absent";
            }
            return expectFailure(() -> g.allReduce(ctx.manager().create(new float[] {1}), ReduceOp.SUM)).getMessage();
        });
        assertThat(messages.get(0)).isEqualTo("group tp[0,1]: rank 0 (global 0) allReduce: comparing the call with the "
                + "other members over the CPU group failed: group tp[0,1]: rank 0 (global 0) allGather: timed out "
                + "after 400 ms waiting for rank 1 (global 1) (group aborted)");
    }

    @Test
    void argumentsAreCheckedBeforeAnythingIsSent() {
        List<String> messages = onNccl(2, new FakeNccl(), TIMEOUT, r -> {
            NDManager m = r.ctx().manager();
            String bool = expectArgument(() -> r.nccl().allReduce(m.create(new boolean[] {true}), ReduceOp.SUM));
            String axis = expectArgument(() -> r.nccl().allGather(m.zeros(new Shape(2, 2)), 2));
            String divisible = expectArgument(() -> r.nccl().reduceScatter(m.zeros(new Shape(3)), 0, ReduceOp.SUM));
            String root = expectArgument(() -> r.nccl().broadcast(m.zeros(new Shape(1)), 2));
            String peer = expectArgument(() -> r.nccl().send(m.zeros(new Shape(1)), r.ctx().rank()));
            r.nccl().barrier(); // still usable: nothing was sent
            return String.join("\n", bool, axis, divisible, root, peer);
        });
        assertThat(messages.get(0)).isEqualTo(String.join("\n",
                "group tp[0,1]: rank 0 (global 0) allReduce: NCCL has no boolean "
                        + "(float32, float16, bfloat16, float64, int32, int64, int8, uint8)",
                "group tp[0,1]: rank 0 (global 0) allGather: axis 2 is out of range for shape (2, 2)",
                "group tp[0,1]: rank 0 (global 0) reduceScatter: axis 0 of shape (3) has length 3, not divisible by "
                        + "the group size 2",
                "group tp[0,1]: rank 0 (global 0) broadcast: root 2 is outside the group of 2",
                "group tp[0,1]: rank 0 (global 0) send: peer 0 must be another member of the group of 2"));
    }

    @Test
    void theFakeReducesBfloat16InFloat() {
        byte[][] in = {{(byte) 0x80, 0x3f}, {0x00, 0x40}}; // bf16 1 + 2 = 3 (0x4040)
        assertThat(FakeNccl.reduce(in, Nccl.BFLOAT16, Nccl.SUM)).containsExactly(0x40, 0x40);
    }

    static CollectiveException expectFailure(Runnable call) {
        try {
            call.run();
        } catch (CollectiveException e) {
            return e;
        }
        throw new AssertionError("expected a CollectiveException");
    }

    static String expectArgument(Runnable call) {
        try {
            call.run();
        } catch (IllegalArgumentException e) {
            return e.getMessage();
        }
        throw new AssertionError("expected an IllegalArgumentException");
    }

    static void await(CyclicBarrier b) {
        try {
            b.await(TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
        } catch (Exception e) {
            throw new AssertionError("the other rank never reached the test's barrier", e);
        }
    }
}
