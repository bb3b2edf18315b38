package org.djlmegatron.comm.nccl;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicInteger;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;
import org.djlmegatron.io.HalfFloats;

/**
 * NCCL on host memory, for tests: buffers are CPU tensors' addresses, read and written through
 * JavaCPP. Calls are queued and return at once, as NCCL's do; a collective runs when the last
 * member has queued it, a send/receive pair when both are queued; events (per calling thread,
 * which stands for a stream) complete when the work queued before them has run. Reductions
 * combine members in rank order, rounding after each step in the element type, as the thread
 * backend does, so results can be compared bit for bit. Faults can be switched on to test how the
 * group copes: work that never completes, communicators that never become ready, asynchronous
 * errors.
 */
public final class FakeNccl implements Nccl {

    private final Map<String, Clique> cliques = new HashMap<>();
    private final ThreadLocal<List<Work>> queuedByThisThread = ThreadLocal.withInitial(ArrayList::new);
    private final ThreadLocal<Integer> groupDepth = ThreadLocal.withInitial(() -> 0);
    private final List<String> aborts = Collections.synchronizedList(new ArrayList<>());
    private final AtomicInteger destroyed = new AtomicInteger();
    private final AtomicInteger initialised = new AtomicInteger();
    private final AtomicInteger receiveBuffersOffRoot = new AtomicInteger();
    private final AtomicInteger groupCalls = new AtomicInteger();
    private final java.util.concurrent.atomic.AtomicLong sentElements = new java.util.concurrent.atomic.AtomicLong();
    private final java.util.concurrent.atomic.AtomicLong collectives = new java.util.concurrent.atomic.AtomicLong();
    private volatile boolean workHangs;
    private volatile boolean initHangs;
    private volatile int asyncError = SUCCESS;
    private volatile String lastError = "";

    /** From now on, queued work never runs (a member stuck on the device). */
    public FakeNccl hangWork() {
        workHangs = true;
        return this;
    }

    /** Communicators never become ready (a member that never starts its init). */
    public FakeNccl hangInit() {
        initHangs = true;
        return this;
    }

    /** Every communicator reports {@code result} as its asynchronous error, with NCCL's last error {@code message}. */
    public FakeNccl failAsync(int result, String message) {
        asyncError = result;
        lastError = message;
        return this;
    }

    /** One entry per aborted communicator: {@code "rank R of N"}. */
    public List<String> aborts() {
        synchronized (aborts) {
            return new ArrayList<>(aborts);
        }
    }

    public int destroyed() {
        return destroyed.get();
    }

    /** Outermost {@code ncclGroupStart/End} pairs closed, over every thread. */
    public int groupCalls() {
        return groupCalls.get();
    }

    /** Elements queued by {@code ncclSend}, over every thread. */
    public long sentElements() {
        return sentElements.get();
    }

    /** Collective calls (not sends or receives) queued, over every thread. */
    public long collectives() {
        return collectives.get();
    }

    public int initialised() {
        return initialised.get();
    }

    /** {@code ncclReduce} calls off the root that passed a receive buffer anyway (NCCL ignores it). */
    public int receiveBuffersOffRoot() {
        return receiveBuffersOffRoot.get();
    }

    private static final class Work {
        volatile boolean done;
    }

    private record Contribution(String kind, long send, long recv, long count, int type, int op, int root, Work work) {}

    private record Message(long buffer, long count, int type, Work work) {}

    private final class Clique {
        final int size;
        final FakeComm[] members;
        int joined;
        final Map<Long, Contribution[]> calls = new HashMap<>();
        final Map<Long, ArrayDeque<Message>> sends = new HashMap<>();
        final Map<Long, ArrayDeque<Message>> recvs = new HashMap<>();

        Clique(int size) {
            this.size = size;
            this.members = new FakeComm[size];
        }
    }

    private static final class FakeComm implements Comm {
        final Clique clique;
        final int rank;
        long nextCall;
        boolean aborted;
        boolean destroyed;

        FakeComm(Clique clique, int rank) {
            this.clique = clique;
            this.rank = rank;
        }
    }

    private record FakeEvent(List<Work> before) implements Event {}

    @Override
    public String describe() {
        return "fake NCCL on host memory";
    }

    @Override
    public byte[] uniqueId() {
        byte[] id = new byte[UNIQUE_ID_BYTES];
        ThreadLocalRandom.current().nextBytes(id);
        return id;
    }

    @Override
    public synchronized Init initRank(int nranks, byte[] uniqueId, int rank, int device) {
        Clique clique = cliques.computeIfAbsent(HexFormat.of().formatHex(uniqueId), k -> new Clique(nranks));
        if (clique.size != nranks || rank < 0 || rank >= nranks || clique.members[rank] != null) {
            return new Init(null, INVALID_ARGUMENT);
        }
        FakeComm comm = new FakeComm(clique, rank);
        clique.members[rank] = comm;
        clique.joined++;
        initialised.incrementAndGet();
        return new Init(comm, IN_PROGRESS);
    }

    @Override
    public synchronized int asyncError(Comm comm) {
        FakeComm c = live(comm);
        if (asyncError != SUCCESS) {
            return asyncError;
        }
        return initHangs || c.clique.joined < c.clique.size ? IN_PROGRESS : SUCCESS;
    }

    @Override
    public synchronized int abort(Comm comm) {
        FakeComm c = live(comm);
        c.aborted = true;
        aborts.add("rank " + c.rank + " of " + c.clique.size);
        // as NCCL stops the aborted rank's kernels: its queued work never touches its buffers again
        int n = c.clique.size;
        c.clique.sends.forEach((pair, q) -> q.removeIf(m -> pair / n == c.rank));
        c.clique.recvs.forEach((pair, q) -> q.removeIf(m -> pair % n == c.rank));
        c.clique.calls.values().removeIf(call -> call[c.rank] != null && !call[c.rank].work().done);
        return SUCCESS;
    }

    @Override
    public synchronized int finalizeComm(Comm comm) {
        live(comm);
        return SUCCESS;
    }

    @Override
    public synchronized int destroy(Comm comm) {
        live(comm).destroyed = true;
        destroyed.incrementAndGet();
        return SUCCESS;
    }

    /** The group must never touch a communicator after aborting or destroying it: that is a use after free. */
    private static FakeComm live(Comm comm) {
        FakeComm c = (FakeComm) comm;
        if (c.aborted || c.destroyed) {
            throw new AssertionError("communicator of rank " + c.rank + " used after "
                    + (c.aborted ? "ncclCommAbort" : "ncclCommDestroy"));
        }
        return c;
    }

    @Override
    public int allReduce(long send, long recv, long count, int type, int op, Comm comm, long stream) {
        return collective(comm, new Contribution("allReduce", send, recv, count, type, op, -1, new Work()));
    }

    /** As NCCL: {@code recv} is used on the root only (there it must be a buffer) and ignored elsewhere. */
    @Override
    public int reduce(long send, long recv, long count, int type, int op, int root, Comm comm, long stream) {
        FakeComm c = (FakeComm) comm;
        if (root < 0 || root >= c.clique.size || (c.rank == root && recv == 0)) {
            return INVALID_ARGUMENT;
        }
        if (c.rank != root && recv != 0) {
            receiveBuffersOffRoot.incrementAndGet();
        }
        return collective(comm, new Contribution("reduce", send, recv, count, type, op, root, new Work()));
    }

    @Override
    public int allGather(long send, long recv, long sendCount, int type, Comm comm, long stream) {
        return collective(comm, new Contribution("allGather", send, recv, sendCount, type, -1, -1, new Work()));
    }

    @Override
    public int reduceScatter(long send, long recv, long recvCount, int type, int op, Comm comm, long stream) {
        return collective(comm, new Contribution("reduceScatter", send, recv, recvCount, type, op, -1, new Work()));
    }

    @Override
    public int broadcast(long send, long recv, long count, int type, int root, Comm comm, long stream) {
        return collective(comm, new Contribution("broadcast", send, recv, count, type, -1, root, new Work()));
    }

    @Override
    public int send(long buffer, long count, int type, int peer, Comm comm, long stream) {
        sentElements.addAndGet(count);
        return message(comm, peer, true, new Message(buffer, count, type, new Work()));
    }

    @Override
    public int recv(long buffer, long count, int type, int peer, Comm comm, long stream) {
        return message(comm, peer, false, new Message(buffer, count, type, new Work()));
    }

    @Override
    public int groupStart() {
        groupDepth.set(groupDepth.get() + 1);
        return SUCCESS;
    }

    @Override
    public int groupEnd() {
        int depth = groupDepth.get();
        if (depth == 0) {
            return INVALID_USAGE;
        }
        groupDepth.set(depth - 1);
        if (depth == 1) {
            groupCalls.incrementAndGet();
        }
        return SUCCESS;
    }

    @Override
    public String errorString(int result) {
        return switch (result) {
            case SUCCESS -> "no error";
            case UNHANDLED_CUDA_ERROR -> "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
            case SYSTEM_ERROR -> "unhandled system error (run with NCCL_DEBUG=INFO for details)";
            case INTERNAL_ERROR -> "internal error - please report this issue to the NCCL developers";
            case INVALID_ARGUMENT -> "invalid argument (run with NCCL_DEBUG=WARN for details)";
            case INVALID_USAGE -> "invalid usage (run with NCCL_DEBUG=WARN for details)";
            case REMOTE_ERROR -> "remote process exited or there was a network error";
            case IN_PROGRESS -> "NCCL operation in progress";
            default -> "unknown result code";
        };
    }

    @Override
    public synchronized String lastError(Comm comm) {
        live(comm);
        return lastError;
    }

    @Override
    public Event recordEvent(int device, long stream) {
        List<Work> queued = queuedByThisThread.get();
        queued.removeIf(w -> w.done);
        return new FakeEvent(new ArrayList<>(queued));
    }

    @Override
    public boolean eventDone(Event event) {
        return ((FakeEvent) event).before().stream().allMatch(w -> w.done);
    }

    @Override
    public void destroyEvent(Event event) {}

    // ------------------------------------------------------------------ running the work

    private synchronized int collective(Comm comm, Contribution c) {
        collectives.incrementAndGet();
        FakeComm fc = live(comm);
        if (fc.clique.joined < fc.clique.size) {
            return INVALID_USAGE; // NCCL: the communicator is not ready
        }
        queuedByThisThread.get().add(c.work());
        Contribution[] call = fc.clique.calls.computeIfAbsent(fc.nextCall++, k -> new Contribution[fc.clique.size]);
        call[fc.rank] = c;
        if (!workHangs && java.util.Arrays.stream(call).allMatch(x -> x != null)) {
            run(call);
        }
        return SUCCESS;
    }

    private synchronized int message(Comm comm, int peer, boolean sending, Message m) {
        FakeComm fc = live(comm);
        Clique clique = fc.clique;
        if (peer < 0 || peer >= clique.size) {
            return INVALID_ARGUMENT;
        }
        queuedByThisThread.get().add(m.work());
        int src = sending ? fc.rank : peer;
        int dst = sending ? peer : fc.rank;
        long pair = (long) src * clique.size + dst;
        (sending ? clique.sends : clique.recvs).computeIfAbsent(pair, k -> new ArrayDeque<>()).add(m);
        ArrayDeque<Message> s = clique.sends.get(pair);
        ArrayDeque<Message> r = clique.recvs.get(pair);
        while (!workHangs && s != null && r != null && !s.isEmpty() && !r.isEmpty()) {
            Message out = s.poll();
            Message in = r.poll();
            if (out.count() != in.count() || out.type() != in.type()) {
                throw new AssertionError("send/recv mismatch between ranks " + src + " and " + dst);
            }
            write(in.buffer(), read(out.buffer(), out.count() * bytes(out.type())));
            out.work().done = true;
            in.work().done = true;
        }
        return SUCCESS;
    }

    /** Reads every input first, then writes every output, so in-place calls work. */
    private static void run(Contribution[] call) {
        int n = call.length;
        Contribution first = call[0];
        for (Contribution c : call) {
            if (!c.kind().equals(first.kind()) || c.count() != first.count() || c.type() != first.type()
                    || c.op() != first.op() || c.root() != first.root()) {
                throw new AssertionError("members queued different collectives: " + List.of(call));
            }
        }
        int size = bytes(first.type());
        long count = first.count();
        byte[][] out = new byte[n][];
        switch (first.kind()) {
            case "allReduce" -> {
                byte[][] in = new byte[n][];
                for (int j = 0; j < n; j++) {
                    in[j] = read(call[j].send(), count * size);
                }
                byte[] sum = reduce(in, first.type(), first.op());
                java.util.Arrays.fill(out, sum);
            }
            case "allGather" -> {
                byte[] all = new byte[(int) (n * count * size)];
                for (int j = 0; j < n; j++) {
                    System.arraycopy(read(call[j].send(), count * size), 0, all, (int) (j * count * size),
                            (int) (count * size));
                }
                java.util.Arrays.fill(out, all);
            }
            case "reduceScatter" -> {
                byte[][] in = new byte[n][];
                for (int j = 0; j < n; j++) {
                    in[j] = read(call[j].send(), n * count * size);
                }
                for (int r = 0; r < n; r++) {
                    byte[][] chunks = new byte[n][];
                    for (int j = 0; j < n; j++) {
                        chunks[j] = java.util.Arrays.copyOfRange(in[j], (int) (r * count * size),
                                (int) ((r + 1) * count * size));
                    }
                    out[r] = reduce(chunks, first.type(), first.op());
                }
            }
            case "broadcast" -> java.util.Arrays.fill(out, read(call[first.root()].send(), count * size));
            case "reduce" -> {
                byte[][] in = new byte[n][];
                for (int j = 0; j < n; j++) {
                    in[j] = read(call[j].send(), count * size);
                }
                out[first.root()] = reduce(in, first.type(), first.op()); // the others' recv is never touched
            }
            default -> throw new AssertionError(first.kind());
        }
        for (int j = 0; j < n; j++) {
            if (out[j] != null) {
                write(call[j].recv(), out[j]);
            }
            call[j].work().done = true;
        }
    }

    private static byte[] read(long address, long length) {
        byte[] b = new byte[(int) length];
        if (length > 0) {
            at(address, length).get(b);
        }
        return b;
    }

    private static void write(long address, byte[] b) {
        if (b.length > 0) {
            at(address, b.length).put(b);
        }
    }

    private static ByteBuffer at(long raw, long length) {
        Pointer p = new Pointer() {
            {
                address = raw; // not named address: the inherited field would shadow the parameter
            }
        };
        return new BytePointer(p).capacity(length).limit(length).asByteBuffer().order(ByteOrder.nativeOrder());
    }

    static int bytes(int type) {
        return switch (type) {
            case INT8, UINT8 -> 1;
            case FLOAT16, BFLOAT16 -> 2;
            case INT32, FLOAT32 -> 4;
            case INT64, FLOAT64 -> 8;
            default -> throw new AssertionError("type " + type);
        };
    }

    /** Combines the members' buffers element by element, in rank order. */
    static byte[] reduce(byte[][] in, int type, int op) {
        ByteBuffer acc = ByteBuffer.wrap(in[0].clone()).order(ByteOrder.nativeOrder());
        int size = bytes(type);
        int count = in[0].length / size;
        for (int j = 1; j < in.length; j++) {
            ByteBuffer next = ByteBuffer.wrap(in[j]).order(ByteOrder.nativeOrder());
            for (int i = 0; i < count; i++) {
                int at = i * size;
                switch (type) {
                    case INT8 -> acc.put(at, (byte) combineLong(acc.get(at), next.get(at), op));
                    case UINT8 -> acc.put(at, (byte) combineLong(acc.get(at) & 0xff, next.get(at) & 0xff, op));
                    case INT32 -> acc.putInt(at, (int) combineLong(acc.getInt(at), next.getInt(at), op));
                    case INT64 -> acc.putLong(at, combineLong(acc.getLong(at), next.getLong(at), op));
                    case FLOAT32 -> acc.putFloat(at, (float) combine(acc.getFloat(at), next.getFloat(at), op));
                    case FLOAT64 -> acc.putDouble(at, combine(acc.getDouble(at), next.getDouble(at), op));
                    case FLOAT16 -> acc.putShort(at, HalfFloats.floatToHalf((float) combine(
                            HalfFloats.halfToFloat(acc.getShort(at)), HalfFloats.halfToFloat(next.getShort(at)), op)));
                    case BFLOAT16 -> acc.putShort(at, HalfFloats.floatToBf16((float) combine(
                            HalfFloats.bf16ToFloat(acc.getShort(at)), HalfFloats.bf16ToFloat(next.getShort(at)), op)));
                    default -> throw new AssertionError("type " + type);
                }
            }
        }
        return acc.array();
    }

    private static long combineLong(long a, long b, int op) {
        return switch (op) {
            case SUM -> a + b;
            case MAX -> Math.max(a, b);
            case MIN -> Math.min(a, b);
            default -> throw new AssertionError("op " + op);
        };
    }

    /** In float for 32-bit and narrower types: (float) (a + b) of floats widened exactly. */
    private static double combine(double a, double b, int op) {
        return switch (op) {
            case SUM -> a + b;
            case MAX -> Math.max(a, b);
            case MIN -> Math.min(a, b);
            default -> throw new AssertionError("op " + op);
        };
    }
}
