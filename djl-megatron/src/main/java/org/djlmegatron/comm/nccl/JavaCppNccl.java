package org.djlmegatron.comm.nccl;

import org.bytedeco.cuda.cudart.CUevent_st;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.cuda.global.nccl;
import org.bytedeco.cuda.nccl.ncclComm;
import org.bytedeco.cuda.nccl.ncclConfig_t;
import org.bytedeco.cuda.nccl.ncclUniqueId;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;

/**
 * {@link Nccl} over JavaCPP's CUDA presets ({@code org.bytedeco.cuda.global.nccl} and
 * {@code cudart}). The presets bring only the JNI glue; {@code libcudart.so.13},
 * {@code libnccl.so.2} and the driver come from the machine ({@code LD_LIBRARY_PATH}). Nothing is
 * loaded until {@link #load()}.
 */
public final class JavaCppNccl implements Nccl {

    private static JavaCppNccl instance;
    private static String loadFailure;

    private final String description;

    private JavaCppNccl(String description) {
        this.description = description;
    }

    /**
     * Loads the CUDA runtime and NCCL once and checks that there is a CUDA device.
     *
     * @throws NcclException with a one-line reason when the libraries or the device are missing
     */
    public static synchronized JavaCppNccl load() {
        if (instance != null) {
            return instance;
        }
        if (loadFailure == null) {
            try {
                instance = new JavaCppNccl(probe());
                return instance;
            } catch (LinkageError e) {
                // UnsatisfiedLinkError, or the class initialisation that wraps it
                loadFailure = "NCCL is unavailable: JavaCPP could not load the CUDA runtime and NCCL (" + rootCause(e)
                        + "); they need an NVIDIA driver and libcudart.so.13 and libnccl.so.2 on LD_LIBRARY_PATH";
            } catch (NcclException e) {
                loadFailure = e.getMessage();
            }
        }
        throw new NcclException(loadFailure);
    }

    private static String probe() {
        int[] value = new int[1];
        cudaCheck(cudart.cudaRuntimeGetVersion(value), "cudaRuntimeGetVersion");
        int runtime = value[0];
        int rc = cudart.cudaGetDeviceCount(value);
        if (rc != cudart.cudaSuccess || value[0] == 0) {
            throw new NcclException("NCCL is unavailable: no CUDA device ("
                    + (rc != cudart.cudaSuccess ? "cudaGetDeviceCount: " + cudaError(rc) : "the driver reports none") + ")");
        }
        int devices = value[0];
        int code = nccl.ncclGetVersion(value) == nccl.ncclSuccess ? value[0] : -1;
        return "NCCL " + code / 10000 + "." + code % 10000 / 100 + "." + code % 100 + ", CUDA runtime "
                + runtime / 1000 + "." + runtime % 1000 / 10 + ", " + devices + " CUDA device(s)";
    }

    private static String rootCause(Throwable t) {
        Throwable c = t;
        while (c.getCause() != null) {
            c = c.getCause();
        }
        String message = c.getMessage() == null ? c.toString() : c.getMessage();
        return message.replaceAll("\\s+", " ").trim();
    }

    private record CudaComm(ncclComm handle) implements Comm {}

    private record CudaEvent(CUevent_st handle) implements Event {}

    private static ncclComm handle(Comm comm) {
        return ((CudaComm) comm).handle();
    }

    /** A JavaCPP pointer at a raw address (device memory: never dereferenced here). */
    private static Pointer at(long raw) {
        return new Pointer() {
            {
                address = raw; // the parameter must not be named address: the inherited field would shadow it
            }
        };
    }

    private static CUstream_st stream(long stream) {
        return new CUstream_st(at(stream));
    }

    @Override
    public String describe() {
        return description;
    }

    @Override
    public byte[] uniqueId() {
        try (ncclUniqueId id = new ncclUniqueId()) {
            int rc = nccl.ncclGetUniqueId(id);
            if (rc != nccl.ncclSuccess) {
                throw new NcclException("ncclGetUniqueId failed: " + errorString(rc));
            }
            byte[] bytes = new byte[UNIQUE_ID_BYTES];
            id.internal().get(bytes, 0, UNIQUE_ID_BYTES);
            return bytes;
        }
    }

    @Override
    public Init initRank(int nranks, byte[] uniqueId, int rank, int device) {
        cudaCheck(cudart.cudaSetDevice(device), "cudaSetDevice(" + device + ")");
        int undefined = Integer.MIN_VALUE; // NCCL_CONFIG_UNDEF_INT: NCCL picks its default
        try (ncclUniqueId id = new ncclUniqueId(); ncclConfig_t config = new ncclConfig_t()) {
            id.internal().put(uniqueId, 0, UNIQUE_ID_BYTES);
            // NCCL_CONFIG_INITIALIZER by hand: NCCL reads min(size, its own sizeof) bytes, so the
            // presets' newer struct suits an older library
            config.size(Pointer.sizeof(ncclConfig_t.class)).magic(nccl.NCCL_API_MAGIC).version(nccl.NCCL_VERSION_CODE)
                    .blocking(0).cgaClusterSize(undefined).minCTAs(undefined).maxCTAs(undefined).netName(null)
                    .splitShare(undefined).trafficClass(undefined).commName(null).collnetEnable(undefined)
                    .CTAPolicy(undefined).shrinkShare(undefined).nvlsCTAs(undefined).nChannelsPerNetPeer(undefined)
                    .nvlinkCentricSched(undefined).graphUsageMode(undefined).numRmaCtx(undefined);
            ncclComm comm = new ncclComm();
            int rc = nccl.ncclCommInitRankConfig(comm, nranks, id, rank, config);
            return new Init(comm.isNull() ? null : new CudaComm(comm), rc);
        }
    }

    @Override
    public int asyncError(Comm comm) {
        int[] state = new int[1];
        int rc = nccl.ncclCommGetAsyncError(handle(comm), state);
        return rc != nccl.ncclSuccess ? rc : state[0];
    }

    @Override
    public int abort(Comm comm) {
        return nccl.ncclCommAbort(handle(comm));
    }

    @Override
    public int finalizeComm(Comm comm) {
        return nccl.ncclCommFinalize(handle(comm));
    }

    @Override
    public int destroy(Comm comm) {
        return nccl.ncclCommDestroy(handle(comm));
    }

    @Override
    public int allReduce(long send, long recv, long count, int type, int op, Comm comm, long stream) {
        return nccl.ncclAllReduce(at(send), at(recv), count, type, op, handle(comm), stream(stream));
    }

    @Override
    public int reduce(long send, long recv, long count, int type, int op, int root, Comm comm, long stream) {
        return nccl.ncclReduce(at(send), at(recv), count, type, op, root, handle(comm), stream(stream));
    }

    @Override
    public int allGather(long send, long recv, long sendCount, int type, Comm comm, long stream) {
        return nccl.ncclAllGather(at(send), at(recv), sendCount, type, handle(comm), stream(stream));
    }

    @Override
    public int reduceScatter(long send, long recv, long recvCount, int type, int op, Comm comm, long stream) {
        return nccl.ncclReduceScatter(at(send), at(recv), recvCount, type, op, handle(comm), stream(stream));
    }

    @Override
    public int broadcast(long send, long recv, long count, int type, int root, Comm comm, long stream) {
        return nccl.ncclBroadcast(at(send), at(recv), count, type, root, handle(comm), stream(stream));
    }

    @Override
    public int send(long buffer, long count, int type, int peer, Comm comm, long stream) {
        return nccl.ncclSend(at(buffer), count, type, peer, handle(comm), stream(stream));
    }

    @Override
    public int recv(long buffer, long count, int type, int peer, Comm comm, long stream) {
        return nccl.ncclRecv(at(buffer), count, type, peer, handle(comm), stream(stream));
    }

    @Override
    public int groupStart() {
        return nccl.ncclGroupStart();
    }

    @Override
    public int groupEnd() {
        return nccl.ncclGroupEnd();
    }

    @Override
    public String errorString(int result) {
        BytePointer s = nccl.ncclGetErrorString(result);
        return s == null || s.isNull() ? "NCCL result " + result : s.getString();
    }

    @Override
    public String lastError(Comm comm) {
        BytePointer s = nccl.ncclGetLastError(handle(comm));
        return s == null || s.isNull() ? "" : s.getString();
    }

    @Override
    public Event recordEvent(int device, long stream) {
        cudaCheck(cudart.cudaSetDevice(device), "cudaSetDevice(" + device + ")");
        CUevent_st event = new CUevent_st();
        cudaCheck(cudart.cudaEventCreateWithFlags(event, cudart.cudaEventDisableTiming), "cudaEventCreateWithFlags");
        int rc = cudart.cudaEventRecord(event, stream(stream));
        if (rc != cudart.cudaSuccess) {
            cudart.cudaEventDestroy(event);
            throw new NcclException("cudaEventRecord failed: " + cudaError(rc));
        }
        return new CudaEvent(event);
    }

    @Override
    public boolean eventDone(Event event) {
        int rc = cudart.cudaEventQuery(((CudaEvent) event).handle());
        if (rc == cudart.cudaErrorNotReady) {
            return false;
        }
        cudaCheck(rc, "cudaEventQuery");
        return true;
    }

    @Override
    public void destroyEvent(Event event) {
        cudart.cudaEventDestroy(((CudaEvent) event).handle());
    }

    private static void cudaCheck(int rc, String call) {
        if (rc != cudart.cudaSuccess) {
            throw new NcclException(call + " failed: " + cudaError(rc));
        }
    }

    private static String cudaError(int rc) {
        BytePointer s = cudart.cudaGetErrorString(rc);
        return (s == null || s.isNull() ? "CUDA error" : s.getString()) + " (" + rc + ")";
    }
}
