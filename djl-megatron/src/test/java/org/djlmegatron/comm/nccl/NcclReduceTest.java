package org.djlmegatron.comm.nccl;

import static org.assertj.core.api.Assertions.assertThat;
import static org.djlmegatron.comm.nccl.NcclProcessGroupTest.bytes;
import static org.djlmegatron.comm.nccl.NcclProcessGroupTest.expectArgument;
import static org.djlmegatron.comm.nccl.NcclProcessGroupTest.expectFailure;
import static org.djlmegatron.comm.nccl.NcclProcessGroupTest.onNccl;
import static org.djlmegatron.comm.nccl.NcclProcessGroupTest.random;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** {@link NcclProcessGroup#reduce} ({@code ncclReduce}) over {@link FakeNccl} on CPU thread ranks. */
class NcclReduceTest {

    private static final Duration TIMEOUT = Duration.ofSeconds(20);
    private static final List<DataType> TYPES = List.of(DataType.FLOAT32, DataType.FLOAT16, DataType.FLOAT64,
            DataType.INT32, DataType.INT64, DataType.INT8, DataType.UINT8);

    /** Every root, reduction and dtype, contiguous and strided; a missing key is a null result. */
    static Map<String, byte[]> reduces(ProcessGroup g, NDManager m, int rank) {
        return reduces(g, m, rank, TYPES);
    }

    static Map<String, byte[]> reduces(ProcessGroup g, NDManager m, int rank, List<DataType> types) {
        Map<String, byte[]> out = new LinkedHashMap<>();
        for (DataType type : types) {
            try (NDManager s = m.newSubManager()) {
                NDArray x = random(s, rank * 29 + type.ordinal(), new Shape(4, 3), type);
                NDArray t = random(s, rank * 11 + type.ordinal(), new Shape(3, 4), type).transpose();
                byte[] before = x.toByteArray();
                for (int root = 0; root < g.size(); root++) {
                    for (ReduceOp op : ReduceOp.values()) {
                        put(out, type + " " + root + " " + op, g.reduce(x, root, op), m);
                    }
                    put(out, type + " " + root + " strided", g.reduce(t, root, ReduceOp.SUM), m);
                }
                assertThat(x.toByteArray()).as("input untouched").isEqualTo(before);
            }
        }
        return out;
    }

    private static void put(Map<String, byte[]> out, String key, NDArray y, NDManager m) {
        if (y != null) {
            out.put(key, bytes(y, m));
        }
    }

    @ParameterizedTest(name = "group of {0}")
    @ValueSource(ints = {1, 2, 4})
    void bitIdenticalToTheThreadBackendAndNullOffTheRoot(int n) {
        FakeNccl fake = new FakeNccl();
        List<Map<String, byte[]>[]> runs = onNccl(n, fake, TIMEOUT, r -> {
            NDManager m = r.ctx().manager();
            @SuppressWarnings("unchecked")
            Map<String, byte[]>[] both = new Map[] {
                reduces(r.ctx().tensorGroup(), m, r.ctx().rank()), reduces(r.nccl(), m, r.ctx().rank())
            };
            return both;
        });
        for (int rank = 0; rank < n; rank++) {
            Map<String, byte[]> threads = runs.get(rank)[0];
            Map<String, byte[]> nccl = runs.get(rank)[1];
            int mine = rank;
            // results exactly where this rank is the root
            assertThat(threads.keySet()).isNotEmpty()
                    .allSatisfy(k -> assertThat(k.split(" ")[1]).isEqualTo(String.valueOf(mine)));
            assertThat(threads).hasSize(TYPES.size() * (ReduceOp.values().length + 1));
            assertThat(nccl.keySet()).containsExactlyElementsOf(threads.keySet());
            for (String key : threads.keySet()) {
                assertThat(nccl.get(key)).as("rank %d: %s", rank, key).isEqualTo(threads.get(key));
            }
        }
        assertThat(fake.receiveBuffersOffRoot()).as("non-roots pass no receive buffer").isZero();
    }

    /** bfloat16 needs the project's native library (DJL's stock JNI cannot make such tensors). */
    @Test
    @Tag("native")
    void bfloat16IsBitIdenticalToTheThreadBackend() {
        FakeNccl fake = new FakeNccl();
        List<Map<String, byte[]>[]> runs = onNccl(2, fake, TIMEOUT, r -> {
            NDManager m = r.ctx().manager();
            List<DataType> bf16 = List.of(DataType.BFLOAT16);
            @SuppressWarnings("unchecked")
            Map<String, byte[]>[] both = new Map[] {
                reduces(r.ctx().tensorGroup(), m, r.ctx().rank(), bf16), reduces(r.nccl(), m, r.ctx().rank(), bf16)
            };
            return both;
        });
        for (int rank = 0; rank < 2; rank++) {
            Map<String, byte[]> threads = runs.get(rank)[0];
            assertThat(threads).hasSize(ReduceOp.values().length + 1);
            assertThat(runs.get(rank)[1].keySet()).containsExactlyElementsOf(threads.keySet());
            for (String key : threads.keySet()) {
                assertThat(runs.get(rank)[1].get(key)).as("rank %d: %s", rank, key).isEqualTo(threads.get(key));
            }
        }
    }

    @Test
    void theRootsResultIsTheAllReduce() {
        List<byte[][]> out = onNccl(2, new FakeNccl(), TIMEOUT, r -> {
            NDArray x = random(r.ctx().manager(), r.ctx().rank(), new Shape(5), DataType.FLOAT32);
            NDArray y = r.nccl().reduce(x, 1, ReduceOp.AVG);
            NDArray all = r.nccl().allReduce(x, ReduceOp.AVG);
            return new byte[][] {y == null ? null : y.toByteArray(), all.toByteArray()};
        });
        assertThat(out.get(0)[0]).isNull();
        assertThat(out.get(1)[0]).isEqualTo(out.get(1)[1]);
    }

    @Test
    void membersNamingDifferentRootsFailEveryMember() {
        List<String> messages = onNccl(2, new FakeNccl(), TIMEOUT, r -> {
            NDArray x = r.ctx().manager().zeros(new Shape(2, 3));
            return expectFailure(() -> r.nccl().reduce(x, r.ctx().rank(), ReduceOp.MAX)).getMessage();
        });
        String table = "members called different collectives (or shapes/dtypes) at call #0 of group tp[0,1]: "
                + "rank 0 (global 0): reduce(root=0, MAX) float32 (2, 3); rank 1 (global 1): reduce(root=1, MAX) "
                + "float32 (2, 3)";
        assertThat(messages.get(0)).isEqualTo("group tp[0,1]: rank 0 (global 0) reduce: " + table + " (group aborted)");
        assertThat(messages.get(1)).isEqualTo("group tp[0,1]: rank 1 (global 1) reduce: " + table + " (group aborted)");
    }

    @Test
    void aRootOutsideTheGroupIsRejectedBeforeAnythingIsSent() {
        FakeNccl fake = new FakeNccl();
        List<String> messages = onNccl(2, fake, TIMEOUT, r -> {
            String message = expectArgument(() -> r.nccl().reduce(r.ctx().manager().zeros(new Shape(1)), 2,
                    ReduceOp.SUM));
            r.nccl().barrier(); // still usable: nothing was sent
            return message;
        });
        assertThat(messages.get(1)).isEqualTo("group tp[0,1]: rank 1 (global 1) reduce: root 2 is outside the group of 2");
        assertThat(fake.collectives()).as("only the barriers reached NCCL").isEqualTo(2);
    }

    @Test
    void workThatNeverFinishesTimesOutNamingTheReduce() {
        FakeNccl fake = new FakeNccl();
        List<String> messages = onNccl(2, fake, Duration.ofMillis(2000), r -> {
            NDArray x = r.ctx().manager().create(new float[] {1, 2});
            r.nccl().barrier(); // set up the communicator first
            fake.hangWork();
            return expectFailure(() -> r.nccl().reduce(x, 0, ReduceOp.SUM)).getMessage();
        });
        assertThat(messages.get(0)).isEqualTo("group tp[0,1]: rank 0 (global 0) reduce: timed out after 2000 ms "
                + "waiting for the NCCL reduce to finish (a member may be stuck, gone, or calling something else)"
                + " (group aborted)");
    }
}
