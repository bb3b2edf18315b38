package org.djlmegatron.comm.nccl;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.NDScope;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.locks.LockSupport;
import java.util.function.Consumer;
import org.djlmegatron.comm.CollectiveException;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.comm.nccl.CallSignature.Kind;

/**
 * A {@link ProcessGroup} whose collectives run in NCCL, on tensors of one CUDA device per member,
 * bootstrapped over a CPU group with the same members (a thread or TCP group built by
 * {@code DistributedWorld}).
 *
 * <p><b>Setup.</b> The communicator is made at the group's first call, in the calling rank's
 * thread: group rank 0 makes the {@code ncclUniqueId}, the CPU group broadcasts it, and every
 * member starts a non-blocking {@code ncclCommInitRankConfig} and polls it with the group's timeout.
 *
 * <p><b>Every call</b> is first compared between the members with a 16-long all-gather over the
 * CPU group: a mismatch (operation, arguments, dtype, shape) or a member that never arrives fails
 * every member with a {@link CollectiveException}, as on the other backends, instead of hanging
 * NCCL. Then NCCL runs on the device's current libtorch stream, so it is ordered with the kernels
 * around it without a host synchronisation. Axes other than 0 are handled by permuting into a
 * contiguous buffer before and after NCCL, so results equal the thread backend's element for
 * element; {@link ReduceOp#AVG} is a sum followed by the same division the other backends do.
 *
 * <p><b>Completion.</b> On CUDA a call returns once its work is queued; a watchdog polls an event
 * recorded after it and NCCL's asynchronous error, and if the work fails or is not done within
 * the timeout it aborts the communicator and reports the failure to {@code onAsyncFailure}. On the
 * CPU (host memory, the in-memory NCCL of the tests) the caller reads results as soon as a call
 * returns, so the call itself waits, with the timeout. Either way a failure aborts the
 * communicator ({@code ncclCommAbort}), and this and every later call fail naming the group, the
 * rank and the operation, with NCCL's error string.
 *
 * <p>{@link #send} returns once the message is queued (the host never waits for the receiver),
 * but unlike the CPU backends' mailboxes NCCL buffers nothing beyond its own FIFOs: sends and
 * receives run in stream order, and a send finishes only when its receive runs. A pattern where
 * members send (large messages) to each other before receiving therefore waits for itself until
 * the timeout; order such exchanges (even members send first, odd ones receive first).
 */
public final class NcclProcessGroup implements ProcessGroup, AutoCloseable {

    private static final long POLL_NANOS = 50_000;

    private final ProcessGroup bootstrap;
    private final Device device;
    private final Duration timeout;
    private final Nccl nccl;
    private final boolean waitOnHost;
    private final Consumer<String> onAsyncFailure;
    private final Object lock = new Object();
    /** Work queued but not known to be done, oldest first (guarded by lock). */
    private final ArrayDeque<Work> inFlight = new ArrayDeque<>();
    private Nccl.Comm comm; // guarded by lock
    private String abortReason; // guarded by lock
    private ScheduledFuture<?> watchdog; // guarded by lock
    private NDManager hostScratch; // the caller's thread only
    private NDArray barrierScratch;
    private long calls;

    /** Queued NCCL work: done once its event is; {@code keepAlive} (or null) is freed then. */
    private record Work(String op, Nccl.Event event, long startNanos, NDArray keepAlive) {}

    @FunctionalInterface
    private interface Enqueue {
        int run(Nccl.Comm comm, long stream);
    }

    /**
     * @param bootstrap a CPU group with the same members, ranks and name, used to exchange the
     *     unique id and compare calls; its timeout should be the same
     * @param device this member's device: CUDA, or the CPU for host-memory NCCL implementations
     * @param timeout the limit for every wait: setup, acceptance and completion of NCCL work
     * @param nccl the library
     * @param onAsyncFailure told (from the watchdog thread) why queued work failed or timed out,
     *     after the communicator was aborted
     */
    public NcclProcessGroup(ProcessGroup bootstrap, Device device, Duration timeout, Nccl nccl,
            Consumer<String> onAsyncFailure) {
        this(bootstrap, device, timeout, nccl, onAsyncFailure, !device.isGpu());
    }

    /** {@code waitOnHost}: whether calls wait for their work (host memory) or leave it to the watchdog (CUDA). */
    NcclProcessGroup(ProcessGroup bootstrap, Device device, Duration timeout, Nccl nccl,
            Consumer<String> onAsyncFailure, boolean waitOnHost) {
        if (timeout.isNegative() || timeout.isZero()) {
            throw new IllegalArgumentException("timeout must be positive, got " + timeout);
        }
        this.bootstrap = bootstrap;
        this.device = device;
        this.timeout = timeout;
        this.nccl = nccl;
        this.onAsyncFailure = onAsyncFailure;
        this.waitOnHost = waitOnHost;
    }

    @Override
    public String name() {
        return bootstrap.name();
    }

    @Override
    public int size() {
        return bootstrap.size();
    }

    @Override
    public int rank() {
        return bootstrap.rank();
    }

    @Override
    public int[] globalRanks() {
        return bootstrap.globalRanks();
    }

    @Override
    public String toString() {
        return "NcclProcessGroup[" + name() + ", rank " + rank() + ", " + device + "]";
    }

    // ------------------------------------------------------------------ collectives

    @Override
    public NDArray allReduce(NDArray x, ReduceOp op) {
        String name = "allReduce";
        int type = ncclType(x, name);
        agree(name, CallSignature.encode(Kind.ALL_REDUCE, op.ordinal(), 0, x.getDataType(), x.getShape()));
        try (NDManager scratch = x.getManager().newSubManager()) {
            NDArray in = contiguous(x, scratch);
            NDArray out = scratch.create(x.getShape(), x.getDataType());
            launch(name, x.size(), (c, s) -> nccl.allReduce(TensorMemory.address(in), TensorMemory.address(out),
                    x.size(), type, ncclSum(op), c, s), waitOnHost, null);
            return owned(op == ReduceOp.AVG ? average(out) : out, x.getManager());
        }
    }

    /**
     * {@code ncclReduce}: every member sends, only the root gets a receive buffer (NCCL ignores
     * the others', so they pass none) and divides for AVG; the others get null.
     */
    @Override
    public NDArray reduce(NDArray x, int root, ReduceOp op) {
        String name = "reduce";
        if (root < 0 || root >= size()) {
            throw new IllegalArgumentException(prefix(name) + "root " + root + " is outside the group of " + size());
        }
        int type = ncclType(x, name);
        agree(name, CallSignature.encode(Kind.REDUCE, root, op.ordinal(), x.getDataType(), x.getShape()));
        boolean isRoot = rank() == root;
        try (NDManager scratch = x.getManager().newSubManager()) {
            NDArray in = contiguous(x, scratch);
            NDArray out = isRoot ? scratch.create(x.getShape(), x.getDataType()) : null;
            launch(name, x.size(), (c, s) -> nccl.reduce(TensorMemory.address(in),
                    out == null ? 0 : TensorMemory.address(out), x.size(), type, ncclSum(op), root, c, s),
                    waitOnHost, null);
            if (!isRoot) {
                return null;
            }
            return owned(op == ReduceOp.AVG ? average(out) : out, x.getManager());
        }
    }

    @Override
    public NDArray allGather(NDArray x, int axis) {
        String name = "allGather";
        int a = axis(x, axis, name);
        int type = ncclType(x, name);
        agree(name, CallSignature.encode(Kind.ALL_GATHER, a, 0, x.getDataType(), x.getShape()));
        try (NDManager scratch = x.getManager().newSubManager()) {
            NDArray in = contiguous(x, scratch);
            NDArray gathered = scratch.create(prepend(size(), x.getShape()), x.getDataType());
            launch(name, x.size(), (c, s) -> nccl.allGather(TensorMemory.address(in),
                    TensorMemory.address(gathered), x.size(), type, c, s), waitOnHost, null);
            return owned(mergeLeading(gathered, a), x.getManager());
        }
    }

    @Override
    public NDArray reduceScatter(NDArray x, int axis, ReduceOp op) {
        String name = "reduceScatter";
        int a = axis(x, axis, name);
        requireDivisible(x, a, name);
        int type = ncclType(x, name);
        agree(name, CallSignature.encode(Kind.REDUCE_SCATTER, a, op.ordinal(), x.getDataType(), x.getShape()));
        try (NDManager scratch = x.getManager().newSubManager()) {
            // chunk j along a becomes the j-th contiguous block, as NCCL scatters them
            NDArray in = splitLeading(x, a, scratch);
            long[] dims = x.getShape().getShape().clone(); // getShape() hands out the Shape's own array
            dims[a] /= size();
            NDArray out = scratch.create(new Shape(dims), x.getDataType());
            launch(name, out.size(), (c, s) -> nccl.reduceScatter(TensorMemory.address(in),
                    TensorMemory.address(out), out.size(), type, ncclSum(op), c, s), waitOnHost, null);
            return owned(op == ReduceOp.AVG ? average(out) : out, x.getManager());
        }
    }

    @Override
    public NDArray broadcast(NDArray x, int root) {
        String name = "broadcast";
        if (root < 0 || root >= size()) {
            throw new IllegalArgumentException(prefix(name) + "root " + root + " is outside the group of " + size());
        }
        int type = ncclType(x, name);
        agree(name, CallSignature.encode(Kind.BROADCAST, root, 0, x.getDataType(), x.getShape()));
        try (NDManager scratch = x.getManager().newSubManager()) {
            NDArray in = contiguous(x, scratch);
            NDArray out = scratch.create(x.getShape(), x.getDataType());
            launch(name, x.size(), (c, s) -> nccl.broadcast(TensorMemory.address(in), TensorMemory.address(out),
                    x.size(), type, root, c, s), waitOnHost, null);
            return owned(out, x.getManager());
        }
    }

    @Override
    public NDArray allToAll(NDArray x, int splitAxis, int concatAxis) {
        String name = "allToAll";
        int sa = axis(x, splitAxis, name);
        int ca = axis(x, concatAxis, name);
        requireDivisible(x, sa, name);
        int type = ncclType(x, name);
        agree(name, CallSignature.encode(Kind.ALL_TO_ALL, sa, ca, x.getDataType(), x.getShape()));
        try (NDManager scratch = x.getManager().newSubManager()) {
            NDArray in = splitLeading(x, sa, scratch); // [n, chunk...]: block j goes to member j
            NDArray received = scratch.create(in.getShape(), x.getDataType()); // block j came from member j
            long chunk = x.size() / size();
            long bytes = chunk * x.getDataType().getNumOfBytes();
            launch(name, chunk, (c, s) -> {
                long send = TensorMemory.address(in);
                long recv = TensorMemory.address(received);
                int rc = nccl.groupStart();
                if (rc != Nccl.SUCCESS) {
                    return rc;
                }
                int first = Nccl.SUCCESS;
                for (int j = 0; j < size(); j++) {
                    int r = nccl.send(send + j * bytes, chunk, type, j, c, s);
                    first = first == Nccl.SUCCESS ? r : first;
                    r = nccl.recv(recv + j * bytes, chunk, type, j, c, s);
                    first = first == Nccl.SUCCESS ? r : first;
                }
                int end = nccl.groupEnd(); // always closes the group, even after a failed enqueue
                return first == Nccl.SUCCESS ? end : first;
            }, waitOnHost, null);
            // received blocks are chunks of x's shape; concatenating them along ca is merging n into ca
            long[] chunkDims = x.getShape().getShape().clone();
            chunkDims[sa] /= size();
            return owned(mergeLeading(received.reshape(prepend(size(), new Shape(chunkDims))), ca), x.getManager());
        }
    }

    /**
     * Variable-split all-to-all with exact counts, as torch's {@code all_to_all_single} with split
     * sizes runs on NCCL: one group ({@code ncclGroupStart/End}) of a send and a receive per member
     * that exchanges rows, nothing padded to the largest count as the other backends' exchange
     * does. Members first agree on the dtype and row shape and on the count table over the CPU
     * group: NCCL would hang on a receive that no send matches.
     */
    @Override
    public NDArray allToAllV(NDArray x, long[] sendCounts, long[] recvCounts, long maxCount) {
        String name = "allToAllV";
        int n = size();
        if (sendCounts.length != n || recvCounts.length != n) {
            throw new IllegalArgumentException(prefix(name) + "needs " + n + " send and receive counts, got "
                    + sendCounts.length + " and " + recvCounts.length);
        }
        if (x.getShape().dimension() < 1 || Arrays.stream(sendCounts).sum() != x.getShape().get(0)) {
            throw new IllegalArgumentException(prefix(name) + "send counts sum to " + Arrays.stream(sendCounts).sum()
                    + " but x has shape " + x.getShape());
        }
        int type = ncclType(x, name);
        Shape row = x.getShape().slice(1);
        agree(name, CallSignature.encode(Kind.ALL_TO_ALL_V, 0, 0, x.getDataType(), row));
        agreeOnCounts(name, sendCounts, recvCounts);
        communicator(name); // made by every member, also by one that moves no rows this time
        long rowElements = row.size();
        long rowBytes = rowElements * x.getDataType().getNumOfBytes();
        long received = Arrays.stream(recvCounts).sum();
        try (NDManager scratch = x.getManager().newSubManager()) {
            NDArray in = contiguous(x, scratch);
            NDArray out = scratch.create(prepend(received, row), x.getDataType());
            long count = (x.getShape().get(0) + received) * rowElements;
            launch(name, count, (c, s) -> {
                long send = TensorMemory.address(in);
                long recv = TensorMemory.address(out);
                int rc = nccl.groupStart();
                if (rc != Nccl.SUCCESS) {
                    return rc;
                }
                int first = Nccl.SUCCESS;
                for (int j = 0; j < n; j++) {
                    if (sendCounts[j] > 0) {
                        int r = nccl.send(send, sendCounts[j] * rowElements, type, j, c, s);
                        first = first == Nccl.SUCCESS ? r : first;
                    }
                    if (recvCounts[j] > 0) {
                        int r = nccl.recv(recv, recvCounts[j] * rowElements, type, j, c, s);
                        first = first == Nccl.SUCCESS ? r : first;
                    }
                    send += sendCounts[j] * rowBytes;
                    recv += recvCounts[j] * rowBytes;
                }
                int end = nccl.groupEnd(); // always closes the group, even after a failed enqueue
                return first == Nccl.SUCCESS ? end : first;
            }, waitOnHost, null);
            return owned(out, x.getManager());
        }
    }

    /**
     * Checks over the CPU group that every member receives from each other exactly the rows that
     * one sends it; a mismatch aborts and fails every member alike (each sees the whole table).
     */
    private void agreeOnCounts(String op, long[] sendCounts, long[] recvCounts) {
        int n = size();
        long[] mine = new long[2 * n];
        System.arraycopy(sendCounts, 0, mine, 0, n);
        System.arraycopy(recvCounts, 0, mine, n, n);
        long[] all;
        try (NDManager host = hostScratch().newSubManager()) {
            all = bootstrap.allGather(host.create(mine, new Shape(1, 2 * n)), 0).toLongArray();
        } catch (CollectiveException e) {
            throw fail(op, "comparing the row counts with the other members over the CPU group failed: "
                    + e.getMessage());
        }
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < n; j++) {
                long sends = all[i * 2 * n + j];
                long expects = all[j * 2 * n + n + i];
                if (sends != expects) {
                    throw fail(op, member(i) + " sends " + sends + " rows to " + member(j) + ", which expects "
                            + expects);
                }
            }
        }
    }

    @Override
    public void barrier() {
        String name = "barrier";
        agree(name, CallSignature.encode(Kind.BARRIER, 0, 0, null, null));
        // the CPU all-gather above already met every member; this orders the devices' streams too
        if (barrierScratch == null) {
            barrierScratch = NDManager.newBaseManager(device).create(new int[] {0});
        }
        long address = TensorMemory.address(barrierScratch);
        launch(name, 1, (c, s) -> nccl.allReduce(address, address, 1, Nccl.INT32, Nccl.SUM, c, s), waitOnHost, null);
    }

    // ------------------------------------------------------------------ point to point

    @Override
    public void send(NDArray x, int dst) {
        String name = "send";
        checkPeer(dst, name);
        int type = ncclType(x, name);
        announce(x, dst, name);
        try (NDManager scratch = x.getManager().newSubManager()) {
            NDArray in = contiguous(x, scratch);
            NDArray keep = null;
            if (waitOnHost) {
                // the call returns before the receiver has the data, and the caller may overwrite x
                keep = in.duplicate();
                keep.detach();
                NDScope.unregister(keep);
            }
            NDArray message = keep == null ? in : keep;
            launch(name, x.size(), (c, s) -> nccl.send(TensorMemory.address(message), x.size(), type, dst, c, s),
                    false, keep);
        }
    }

    @Override
    public NDArray recv(NDManager manager, Shape shape, DataType dataType, int src) {
        String name = "recv";
        checkPeer(src, name);
        requireGroupDevice(manager, name);
        int type = ncclType(dataType, name);
        expect(src, shape, dataType, name);
        try (NDManager scratch = manager.newSubManager()) {
            NDArray out = scratch.create(shape, dataType);
            launch(name, out.size(), (c, s) -> nccl.recv(TensorMemory.address(out), out.size(), type, src, c, s),
                    waitOnHost, null);
            return owned(out, manager);
        }
    }

    @Override
    public NDArray sendRecv(NDArray x, int dst, NDManager manager, Shape shape, DataType dataType, int src) {
        return batchSendRecv(new NDArray[] {x}, new int[] {dst}, manager, shape, dataType, new int[] {src})[0];
    }

    /**
     * Every send and receive in one NCCL group ({@code ncclGroupStart/End}), as Megatron's
     * {@code batch_isend_irecv}: on a device a send's kernel waits for its receive, so sends and
     * receives queued one after another deadlock as soon as two neighbours exchange both ways.
     */
    @Override
    public NDArray[] batchSendRecv(NDArray[] sends, int[] dsts, NDManager manager, Shape shape, DataType dataType,
            int[] srcs) {
        String name = "batchSendRecv";
        if (sends.length != dsts.length) {
            throw new IllegalArgumentException(prefix(name) + sends.length + " arrays to send but " + dsts.length
                    + " destinations");
        }
        requireGroupDevice(manager, name);
        int[] sendTypes = new int[sends.length];
        for (int i = 0; i < sends.length; i++) {
            checkPeer(dsts[i], name);
            sendTypes[i] = ncclType(sends[i], name);
        }
        int recvType = ncclType(dataType, name);
        // the CPU group's messages never wait for their receiver, so announcing first cannot deadlock
        for (int i = 0; i < sends.length; i++) {
            announce(sends[i], dsts[i], name);
        }
        for (int src : srcs) {
            checkPeer(src, name);
            expect(src, shape, dataType, name);
        }
        try (NDManager scratch = manager.newSubManager()) {
            NDArray[] in = new NDArray[sends.length];
            long count = 0;
            for (int i = 0; i < sends.length; i++) {
                in[i] = contiguous(sends[i], scratch);
                count += in[i].size();
            }
            NDArray received = scratch.create(prepend(srcs.length, shape), dataType);
            count += received.size();
            long bytes = shape.size() * dataType.getNumOfBytes();
            launch(name, count, (c, s) -> {
                int rc = nccl.groupStart();
                if (rc != Nccl.SUCCESS) {
                    return rc;
                }
                int first = Nccl.SUCCESS;
                for (int i = 0; i < in.length; i++) {
                    int r = nccl.send(TensorMemory.address(in[i]), in[i].size(), sendTypes[i], dsts[i], c, s);
                    first = first == Nccl.SUCCESS ? r : first;
                }
                long base = TensorMemory.address(received);
                for (int j = 0; j < srcs.length; j++) {
                    int r = nccl.recv(base + j * bytes, shape.size(), recvType, srcs[j], c, s);
                    first = first == Nccl.SUCCESS ? r : first;
                }
                int end = nccl.groupEnd(); // always closes the group, even after a failed enqueue
                return first == Nccl.SUCCESS ? end : first;
            }, waitOnHost, null);
            NDArray[] out = new NDArray[srcs.length];
            for (int j = 0; j < srcs.length; j++) {
                out[j] = owned(received.get(j), manager);
            }
            return out;
        }
    }

    /** Tells {@code dst} over the CPU group the dtype and shape of the message that follows. */
    private void announce(NDArray x, int dst, String op) {
        try (NDManager host = hostScratch().newSubManager()) {
            bootstrap.send(host.create(CallSignature.encode(Kind.MESSAGE, 0, 0, x.getDataType(), x.getShape())), dst);
        } catch (CollectiveException e) {
            throw fail(op, "telling " + member(dst) + " what comes failed: " + e.getMessage());
        }
    }

    /** Reads what {@code src} announced and fails both sides' group if it is not what this rank expects. */
    private void expect(int src, Shape shape, DataType dataType, String op) {
        long[] expected = CallSignature.encode(Kind.MESSAGE, 0, 0, dataType, shape);
        long[] sent;
        try (NDManager host = hostScratch().newSubManager()) {
            sent = bootstrap.recv(host, new Shape(CallSignature.LONGS), DataType.INT64, src).toLongArray();
        } catch (CollectiveException e) {
            throw fail(op, "waiting for " + member(src) + " to send failed: " + e.getMessage());
        }
        if (!Arrays.equals(expected, sent)) {
            throw fail(op, "expected " + CallSignature.tensor(expected) + " from " + member(src)
                    + " but it sent " + CallSignature.tensor(sent));
        }
    }

    private void requireGroupDevice(NDManager manager, String op) {
        if (!manager.getDevice().equals(device)) {
            throw new IllegalArgumentException(prefix(op) + "the manager is on " + manager.getDevice()
                    + " but the group's device is " + device);
        }
    }

    // ------------------------------------------------------------------ lifecycle

    /**
     * Aborts the communicator ({@code ncclCommAbort}, which also stops its queued work) and fails
     * every later call with {@code reason}. Safe from any thread; a no-op once aborted or closed.
     */
    public void abort(String reason) {
        abortWith(reason);
    }

    /**
     * Waits (with the timeout) for queued work, then finalizes and destroys the communicator;
     * aborts it instead if that fails. Call once no member thread uses the group any more.
     *
     * @throws CollectiveException if queued work failed or did not finish
     */
    @Override
    public void close() {
        try {
            Nccl.Comm c;
            synchronized (lock) {
                c = abortReason == null ? comm : null;
            }
            if (c != null) {
                Work w;
                while ((w = oldestInFlight()) != null) {
                    await(w);
                    synchronized (lock) {
                        reapLocked();
                    }
                }
                int rc;
                synchronized (lock) {
                    requireOpen("close");
                    rc = nccl.finalizeComm(c);
                }
                settle("close", "ncclCommFinalize", rc);
                synchronized (lock) {
                    if (abortReason == null) {
                        cancelWatchdogLocked();
                        nccl.destroy(c);
                        comm = null;
                        abortReason = "the group is closed";
                    }
                }
            }
            abortWith("the group is closed"); // no communicator (never used, or aborted): just stop
        } finally {
            if (barrierScratch != null) {
                barrierScratch.getManager().close();
                barrierScratch = null;
            }
            if (hostScratch != null) {
                hostScratch.close();
                hostScratch = null;
            }
        }
    }

    // ------------------------------------------------------------------ the machinery

    /**
     * Compares this call with every member's over the CPU group; a mismatch aborts and fails every
     * member alike, since each sees the same table.
     */
    private void agree(String op, long[] signature) {
        long call = calls++;
        requireOpen(op);
        long[] all;
        try (NDManager host = hostScratch().newSubManager()) {
            all = bootstrap.allGather(host.create(signature, new Shape(1, CallSignature.LONGS)), 0).toLongArray();
        } catch (CollectiveException e) {
            throw fail(op, "comparing the call with the other members over the CPU group failed: " + e.getMessage());
        }
        boolean same = true;
        for (int j = 0; j < size() && same; j++) {
            same = Arrays.equals(all, j * CallSignature.LONGS, (j + 1) * CallSignature.LONGS,
                    signature, 0, CallSignature.LONGS);
        }
        if (!same) {
            StringBuilder sb = new StringBuilder("members called different collectives (or shapes/dtypes) at call #")
                    .append(call).append(" of group ").append(name()).append(": ");
            for (int j = 0; j < size(); j++) {
                long[] theirs = Arrays.copyOfRange(all, j * CallSignature.LONGS, (j + 1) * CallSignature.LONGS);
                sb.append(j == 0 ? "" : "; ").append(member(j)).append(": ").append(CallSignature.describe(theirs));
            }
            throw fail(op, sb.toString());
        }
    }

    /**
     * Queues one NCCL call ({@code count} elements; nothing for 0) on the device's current stream,
     * then waits for it ({@code await}) or hands it to the watchdog. {@code keepAlive} is closed
     * once the work is done.
     */
    private void launch(String op, long count, Enqueue enqueue, boolean await, NDArray keepAlive) {
        if (count == 0) { // every member has the same shape, so every member skips alike
            if (keepAlive != null) {
                keepAlive.close();
            }
            return;
        }
        Nccl.Comm c = communicator(op);
        long stream = TensorMemory.currentStream(device);
        Work work;
        try {
            int rc;
            synchronized (lock) {
                requireOpen(op);
                reapLocked();
                int state = nccl.asyncError(c); // an earlier call may have failed after it was queued
                if (state != Nccl.SUCCESS) {
                    throw fail(op, "NCCL reported an asynchronous error before this call: " + error(state));
                }
                rc = enqueue.run(c, stream);
            }
            settle(op, "NCCL " + op, rc);
            synchronized (lock) {
                requireOpen(op);
                work = new Work(op, nccl.recordEvent(deviceIndex(), stream), System.nanoTime(), keepAlive);
                inFlight.add(work);
                if (watchdog == null && !await) {
                    watchdog = Watchdog.watch(this::watch, timeout);
                }
            }
        } catch (NcclException e) {
            close(keepAlive);
            throw fail(op, e.getMessage());
        } catch (RuntimeException | Error e) {
            close(keepAlive);
            throw e;
        }
        if (await) {
            await(work);
            synchronized (lock) {
                reapLocked();
            }
        }
    }

    /** The communicator, made on first use: unique id over the CPU group, non-blocking init, polled. */
    private Nccl.Comm communicator(String op) {
        synchronized (lock) {
            requireOpen(op);
            if (comm != null) {
                return comm;
            }
        }
        byte[] id;
        try (NDManager host = hostScratch().newSubManager()) {
            byte[] mine = rank() == 0 ? nccl.uniqueId() : new byte[Nccl.UNIQUE_ID_BYTES];
            id = bootstrap.broadcast(host.create(mine), 0).toByteArray();
        } catch (NcclException e) {
            throw fail(op, e.getMessage());
        } catch (CollectiveException e) {
            throw fail(op, "handing out the NCCL unique id over the CPU group failed: " + e.getMessage());
        }
        Nccl.Init init;
        try {
            init = nccl.initRank(size(), id, rank(), deviceIndex());
        } catch (NcclException e) {
            throw fail(op, e.getMessage());
        }
        synchronized (lock) {
            if (abortReason != null) {
                if (init.comm() != null) {
                    nccl.abort(init.comm());
                }
                throw aborted(op);
            }
            comm = init.comm();
        }
        if (init.comm() == null) {
            throw fail(op, "ncclCommInitRankConfig made no communicator: " + nccl.errorString(init.result()));
        }
        settle(op, "setting up the NCCL communicator of " + size() + " rank(s) (" + nccl.describe() + ")",
                init.result());
        synchronized (lock) {
            return comm;
        }
    }

    /**
     * Accepts NCCL's answer to a call: done, an error, or (non-blocking communicators) in
     * progress, in which case it polls the communicator until it is ready, with the timeout.
     */
    private void settle(String op, String what, int rc) {
        if (rc == Nccl.SUCCESS) {
            return;
        }
        if (rc != Nccl.IN_PROGRESS) {
            throw fail(op, what + " failed: " + error(rc));
        }
        long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            int state;
            synchronized (lock) {
                requireOpen(op);
                state = nccl.asyncError(comm);
                if (state != Nccl.SUCCESS && state != Nccl.IN_PROGRESS) {
                    throw fail(op, what + " failed: " + error(state));
                }
            }
            if (state == Nccl.SUCCESS) {
                return;
            }
            if (System.nanoTime() > deadline) {
                throw fail(op, what + " timed out after " + timeout.toMillis() + " ms (every member must reach this "
                        + "call; is one stuck or gone?)");
            }
            LockSupport.parkNanos(POLL_NANOS);
        }
    }

    /** Waits for {@code work} to finish, with the timeout counted from its start. */
    private void await(Work work) {
        long deadline = work.startNanos() + timeout.toNanos();
        while (true) {
            synchronized (lock) {
                requireOpen(work.op());
                if (!inFlight.contains(work)) {
                    return; // the watchdog found it done and released it
                }
                try {
                    if (nccl.eventDone(work.event())) {
                        return;
                    }
                } catch (NcclException e) {
                    throw fail(work.op(), e.getMessage());
                }
                int state = nccl.asyncError(comm);
                if (state != Nccl.SUCCESS && state != Nccl.IN_PROGRESS) {
                    throw fail(work.op(), "NCCL " + work.op() + " failed while it ran: " + error(state));
                }
            }
            if (System.nanoTime() > deadline) {
                throw fail(work.op(), timedOut(work));
            }
            LockSupport.parkNanos(POLL_NANOS);
        }
    }

    /** The watchdog's check of queued work; reports a failure once the communicator is aborted. */
    private void watch() {
        String failure = null;
        try {
            synchronized (lock) {
                if (abortReason != null) {
                    return;
                }
                reapLocked();
                Work oldest = inFlight.peekFirst();
                int state = nccl.asyncError(comm);
                if (state != Nccl.SUCCESS && state != Nccl.IN_PROGRESS) {
                    failure = prefix(oldest == null ? "watchdog" : oldest.op()) + "NCCL failed while queued work ran: "
                            + error(state);
                } else if (oldest != null && System.nanoTime() - oldest.startNanos() > timeout.toNanos()) {
                    failure = prefix(oldest.op()) + timedOut(oldest);
                }
            }
        } catch (RuntimeException e) {
            failure = prefix("watchdog") + "checking queued NCCL work failed: " + e.getMessage();
        }
        if (failure != null && abortWith(failure)) {
            onAsyncFailure.accept(failure);
        }
    }

    private String timedOut(Work work) {
        return "timed out after " + timeout.toMillis() + " ms waiting for the NCCL " + work.op()
                + " to finish (a member may be stuck, gone, or calling something else)";
    }

    /** Frees the work at the head of the queue that has finished (under lock). */
    private void reapLocked() {
        while (!inFlight.isEmpty() && nccl.eventDone(inFlight.peekFirst().event())) {
            release(inFlight.pollFirst());
        }
    }

    private Work oldestInFlight() {
        synchronized (lock) {
            return inFlight.peekFirst();
        }
    }

    private void release(Work w) {
        nccl.destroyEvent(w.event());
        close(w.keepAlive());
    }

    private static void close(NDArray array) {
        if (array != null) {
            array.close();
        }
    }

    /** Aborts with {@code detail} after this member's prefix and returns the exception to throw. */
    private CollectiveException fail(String op, String detail) {
        String message = prefix(op) + detail;
        abortWith(message);
        synchronized (lock) {
            // if something else aborted first, report both
            return new CollectiveException(message.equals(abortReason) ? message + " (group aborted)"
                    : message + " (the group was already aborted: " + abortReason + ")");
        }
    }

    /** @return whether this aborted the group (it was not aborted or closed yet) */
    private boolean abortWith(String reason) {
        synchronized (lock) {
            if (abortReason != null) {
                return false;
            }
            abortReason = reason;
            cancelWatchdogLocked();
            if (comm != null) {
                nccl.abort(comm); // stops the queued work, so its buffers may go
                comm = null;
            }
            inFlight.forEach(this::release);
            inFlight.clear();
            return true;
        }
    }

    private void cancelWatchdogLocked() {
        if (watchdog != null) {
            watchdog.cancel(false);
            watchdog = null;
        }
    }

    private void requireOpen(String op) {
        synchronized (lock) {
            if (abortReason != null) {
                throw aborted(op);
            }
        }
    }

    private CollectiveException aborted(String op) {
        return new CollectiveException(prefix(op) + "aborted: " + abortReason);
    }

    private String error(int rc) {
        String last;
        synchronized (lock) {
            last = comm == null ? "" : nccl.lastError(comm);
        }
        return nccl.errorString(rc) + " (ncclResult " + rc + ")" + (last == null || last.isEmpty() ? "" : ": " + last);
    }

    // ------------------------------------------------------------------ tensors

    /** A contiguous view or copy of x's values in x's logical order, detached from autograd, on scratch. */
    private static NDArray contiguous(NDArray x, NDManager scratch) {
        NDArray view = x.stopGradient();
        view.attach(scratch);
        return view.flatten(); // a view when x is contiguous, else a row-major copy
    }

    /**
     * x with its axis {@code a} split into {@code size()} chunks, the chunk index moved to the
     * front, as one contiguous buffer {@code [n, chunk...]}.
     */
    private NDArray splitLeading(NDArray x, int a, NDManager scratch) {
        if (a == 0) {
            return contiguous(x, scratch);
        }
        long[] dims = x.getShape().getShape();
        long[] split = new long[dims.length + 1];
        System.arraycopy(dims, 0, split, 0, a);
        split[a] = size();
        split[a + 1] = dims[a] / size();
        System.arraycopy(dims, a + 1, split, a + 2, dims.length - a - 1);
        int[] order = new int[split.length];
        order[0] = a;
        for (int i = 1; i < order.length; i++) {
            order[i] = i <= a ? i - 1 : i;
        }
        NDArray view = x.stopGradient();
        view.attach(scratch);
        return view.reshape(new Shape(split)).transpose(order).flatten();
    }

    /** {@code [n, d0, ..., dk]} to the concatenation of the n blocks along axis a: {@code d_a * n}. */
    private static NDArray mergeLeading(NDArray blocks, int a) {
        long[] dims = blocks.getShape().getShape();
        long[] merged = Arrays.copyOfRange(dims, 1, dims.length);
        merged[a] *= dims[0];
        if (a == 0) {
            return blocks.reshape(new Shape(merged));
        }
        int[] order = new int[dims.length];
        for (int i = 0; i < order.length; i++) {
            order[i] = i < a ? i + 1 : i == a ? 0 : i;
        }
        return blocks.transpose(order).reshape(new Shape(merged));
    }

    private static Shape prepend(long n, Shape shape) {
        long[] dims = shape.getShape();
        long[] out = new long[dims.length + 1];
        out[0] = n;
        System.arraycopy(dims, 0, out, 1, dims.length);
        return new Shape(out);
    }

    /** Moves a result from the scratch manager to the caller's. */
    private static NDArray owned(NDArray result, NDManager manager) {
        result.attach(manager);
        return result;
    }

    /** The other backends' AVG: floats divide in their own type, integers in double, truncated toward zero. */
    private NDArray average(NDArray sum) {
        DataType type = sum.getDataType();
        if (type.isFloating()) {
            return sum.divi(size());
        }
        try (NDArray wide = sum.toType(DataType.FLOAT64, false)) {
            wide.divi(size());
            return wide.toType(type, false);
        }
    }

    private static int ncclSum(ReduceOp op) {
        return switch (op) {
            case SUM, AVG -> Nccl.SUM;
            case MAX -> Nccl.MAX;
            case MIN -> Nccl.MIN;
        };
    }

    private int ncclType(NDArray x, String op) {
        if (!x.getDevice().equals(device)) {
            throw new IllegalArgumentException(prefix(op) + "the input is on " + x.getDevice()
                    + " but the group's device is " + device);
        }
        return ncclType(x.getDataType(), op);
    }

    private int ncclType(DataType type, String op) {
        return switch (type) {
            case FLOAT32 -> Nccl.FLOAT32;
            case FLOAT16 -> Nccl.FLOAT16;
            case BFLOAT16 -> Nccl.BFLOAT16;
            case FLOAT64 -> Nccl.FLOAT64;
            case INT32 -> Nccl.INT32;
            case INT64 -> Nccl.INT64;
            case INT8 -> Nccl.INT8;
            case UINT8 -> Nccl.UINT8;
            default -> throw new IllegalArgumentException(prefix(op) + "NCCL has no " + type
                    + " (float32, float16, bfloat16, float64, int32, int64, int8, uint8)");
        };
    }

    private int deviceIndex() {
        return device.isGpu() ? device.getDeviceId() : -1;
    }

    private NDManager hostScratch() {
        if (hostScratch == null) {
            hostScratch = NDManager.newBaseManager(Device.cpu());
        }
        return hostScratch;
    }

    private String prefix(String op) {
        return "group " + name() + ": " + member(rank()) + " " + op + ": ";
    }

    private String member(int member) {
        return "rank " + member + " (global " + globalRanks()[member] + ")";
    }

    private int axis(NDArray x, int axis, String op) {
        int dims = x.getShape().dimension();
        int a = axis < 0 ? axis + dims : axis;
        if (a < 0 || a >= dims) {
            throw new IllegalArgumentException(prefix(op) + "axis " + axis + " is out of range for shape " + x.getShape());
        }
        return a;
    }

    private void requireDivisible(NDArray x, int axis, String op) {
        long length = x.getShape().get(axis);
        if (length % size() != 0) {
            throw new IllegalArgumentException(prefix(op) + "axis " + axis + " of shape " + x.getShape()
                    + " has length " + length + ", not divisible by the group size " + size());
        }
    }

    private void checkPeer(int peer, String op) {
        if (peer < 0 || peer >= size() || peer == rank()) {
            throw new IllegalArgumentException(prefix(op) + "peer " + peer
                    + " must be another member of the group of " + size());
        }
    }
}
