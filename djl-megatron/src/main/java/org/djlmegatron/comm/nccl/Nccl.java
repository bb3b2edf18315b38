package org.djlmegatron.comm.nccl;

/**
 * The NCCL and CUDA-runtime calls {@link NcclProcessGroup} makes, with NCCL's own numbering of
 * results, data types and reductions. {@link JavaCppNccl} is the real library; tests run the
 * group over an in-memory implementation on host memory, so that everything but the library
 * itself is exercised without a GPU.
 *
 * <p>Buffers and streams are raw addresses ({@code long}): device pointers and
 * {@code cudaStream_t} values as libtorch hands them out. Calls that NCCL documents as returning
 * a {@code ncclResult_t} return it; the others throw {@link NcclException}.
 */
public interface Nccl {

    int SUCCESS = 0;
    int UNHANDLED_CUDA_ERROR = 1;
    int SYSTEM_ERROR = 2;
    int INTERNAL_ERROR = 3;
    int INVALID_ARGUMENT = 4;
    int INVALID_USAGE = 5;
    int REMOTE_ERROR = 6;
    /** A non-blocking communicator is still working; poll {@link #asyncError}. */
    int IN_PROGRESS = 7;

    int INT8 = 0;
    int UINT8 = 1;
    int INT32 = 2;
    int INT64 = 4;
    int FLOAT16 = 6;
    int FLOAT32 = 7;
    int FLOAT64 = 8;
    int BFLOAT16 = 9;

    int SUM = 0;
    int MAX = 2;
    int MIN = 3;

    /** Bytes of an {@code ncclUniqueId}. */
    int UNIQUE_ID_BYTES = 128;

    /** An opaque communicator ({@code ncclComm_t}) of one rank. */
    interface Comm {}

    /** An opaque CUDA event. */
    interface Event {}

    /** What {@link #initRank} started: the communicator (null if none was made) and NCCL's result. */
    record Init(Comm comm, int result) {}

    /** E.g. {@code "NCCL 2.28.3, CUDA runtime 13.0"}. */
    String describe();

    /** A fresh {@code ncclUniqueId}, made by the group's rank 0 and handed to every member. */
    byte[] uniqueId();

    /**
     * Starts a non-blocking {@code ncclCommInitRankConfig} on CUDA device {@code device} (the
     * calling thread's current device becomes {@code device}); {@link #asyncError} reports
     * {@link #IN_PROGRESS} until the communicator is ready.
     */
    Init initRank(int nranks, byte[] uniqueId, int rank, int device);

    /** {@code ncclCommGetAsyncError}: the communicator's state, an error, or IN_PROGRESS. */
    int asyncError(Comm comm);

    /** {@code ncclCommAbort}: stops outstanding work and frees the communicator. */
    int abort(Comm comm);

    /** {@code ncclCommFinalize}: flushes outstanding work (non-blocking: poll asyncError). */
    int finalizeComm(Comm comm);

    /** {@code ncclCommDestroy}, after a finished finalize. */
    int destroy(Comm comm);

    int allReduce(long send, long recv, long count, int type, int op, Comm comm, long stream);

    /** {@code ncclReduce}: the result lands in {@code recv} on rank {@code root} only; NCCL ignores recv elsewhere (0 there). */
    int reduce(long send, long recv, long count, int type, int op, int root, Comm comm, long stream);

    int allGather(long send, long recv, long sendCount, int type, Comm comm, long stream);

    int reduceScatter(long send, long recv, long recvCount, int type, int op, Comm comm, long stream);

    int broadcast(long send, long recv, long count, int type, int root, Comm comm, long stream);

    int send(long buffer, long count, int type, int peer, Comm comm, long stream);

    int recv(long buffer, long count, int type, int peer, Comm comm, long stream);

    int groupStart();

    int groupEnd();

    /** {@code ncclGetErrorString}. */
    String errorString(int result);

    /** {@code ncclGetLastError}: NCCL's description of the last error, possibly empty. */
    String lastError(Comm comm);

    /** An event recorded on {@code stream} of CUDA device {@code device}: done once the work queued before it is. */
    Event recordEvent(int device, long stream);

    /** Whether the work before {@code event} has finished ({@code cudaEventQuery}). */
    boolean eventDone(Event event);

    void destroyEvent(Event event);
}
