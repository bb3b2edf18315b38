package org.djlmegatron.comm.nccl;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assumptions.assumeThat;

import org.bytedeco.cuda.global.nccl;
import org.junit.jupiter.api.Test;

class JavaCppNcclTest {

    /** The interface numbers results, types and ops as NCCL does (compile-time constants: loads no natives). */
    @Test
    void codesAreNcclsOwn() {
        assertThat(new int[] {Nccl.SUCCESS, Nccl.UNHANDLED_CUDA_ERROR, Nccl.SYSTEM_ERROR, Nccl.INTERNAL_ERROR,
            Nccl.INVALID_ARGUMENT, Nccl.INVALID_USAGE, Nccl.REMOTE_ERROR, Nccl.IN_PROGRESS})
                .containsExactly(nccl.ncclSuccess, nccl.ncclUnhandledCudaError, nccl.ncclSystemError,
                        nccl.ncclInternalError, nccl.ncclInvalidArgument, nccl.ncclInvalidUsage, nccl.ncclRemoteError,
                        nccl.ncclInProgress);
        assertThat(new int[] {Nccl.INT8, Nccl.UINT8, Nccl.INT32, Nccl.INT64, Nccl.FLOAT16, Nccl.FLOAT32,
            Nccl.FLOAT64, Nccl.BFLOAT16})
                .containsExactly(nccl.ncclInt8, nccl.ncclUint8, nccl.ncclInt32, nccl.ncclInt64, nccl.ncclFloat16,
                        nccl.ncclFloat32, nccl.ncclFloat64, nccl.ncclBfloat16);
        assertThat(new int[] {Nccl.SUM, Nccl.MAX, Nccl.MIN}).containsExactly(nccl.ncclSum, nccl.ncclMax, nccl.ncclMin);
        assertThat(Nccl.UNIQUE_ID_BYTES).isEqualTo(nccl.NCCL_UNIQUE_ID_BYTES);
    }

    /** Without CUDA, asking for NCCL is one clear line, every time, not a crash. */
    @Test
    void withoutCudaLoadingFailsWithOneLine() {
        assumeThat(System.getenv("CUDA_VISIBLE_DEVICES") == null && !new java.io.File("/dev/nvidiactl").exists())
                .as("a machine without an NVIDIA driver").isTrue();
        NcclException first = null;
        try {
            JavaCppNccl.load();
        } catch (NcclException e) {
            first = e;
        }
        assertThat(first).as("load() must fail here").isNotNull();
        assertThat(first.getMessage()).startsWith("NCCL is unavailable: ").doesNotContain("\n")
                .contains("LD_LIBRARY_PATH");
        NcclException again = null;
        try {
            JavaCppNccl.load();
        } catch (NcclException e) {
            again = e;
        }
        assertThat(again).isNotNull();
        assertThat(again.getMessage()).isEqualTo(first.getMessage());
    }
}
