package org.djlmegatron.comm;

import ai.djl.Device;
import ai.djl.engine.Engine;
import java.util.Locale;

/**
 * Which device each of a JVM's ranks computes on: all on the CPU, or local rank {@code i} on
 * CUDA device {@code i} (one rank per GPU, as torchrun's LOCAL_RANK does it).
 */
public interface RankDevices {

    /** The device of the rank with index {@code localRank} among this JVM's ranks. */
    Device of(int localRank);

    /** Every rank on the CPU. */
    static RankDevices cpu() {
        return localRank -> Device.cpu();
    }

    /** Local rank i on CUDA device i; refused when the engine sees fewer GPUs than ranks. */
    static RankDevices cuda(int localRanks) {
        int gpus = Engine.getEngine("PyTorch").getGpuCount();
        if (gpus < localRanks) {
            throw new IllegalArgumentException("--device cuda: " + localRanks + " ranks in this JVM but the engine sees "
                    + gpus + " CUDA device(s)" + (gpus == 0 ? " (a CPU build of libtorch, or no driver)" : ""));
        }
        return Device::gpu;
    }

    /** {@code cpu}, {@code cuda}, or {@code auto} (cuda when there is a GPU for every rank). */
    static RankDevices parse(String name, int localRanks) {
        switch (name.toLowerCase(Locale.ROOT)) {
            case "cpu":
                return cpu();
            case "cuda":
            case "gpu":
                return cuda(localRanks);
            case "auto":
                return Engine.getEngine("PyTorch").getGpuCount() >= localRanks ? cuda(localRanks) : cpu();
            default:
                throw new IllegalArgumentException("--device must be auto, cpu or cuda, found " + name);
        }
    }
}
