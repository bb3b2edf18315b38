package org.djlmegatron.check;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.function.Supplier;
import org.djlmegatron.launch.DistributedWorld;
import org.djlmegatron.comm.LaunchConfig;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.RankDevices;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.comm.nccl.JavaCppNccl;
import org.djlmegatron.comm.nccl.NcclProcessGroup;
import org.djlmegatron.engine.TorchNative;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Checks real NCCL on a GPU host: one rank on CUDA device 0 (NCCL allows one rank per GPU), whose
 * groups {@link DistributedWorld} makes NCCL groups; a small GPTModel's parameters and gradients
 * (after a forward and backward pass) go through every collective, and each result must equal what
 * a group of one gives: the input itself, bit for bit. bfloat16 copies too when the project's
 * native library is loaded (DJL's stock JNI cannot make bfloat16 tensors).
 *
 * <pre>
 * java -cp "$CP" org.djlmegatron.check.NcclGpuCheck
 * </pre>
 * prints {@code NCCL GPU check: OK (...)} and exits 0, or lists what differed and exits 1.
 */
public final class NcclGpuCheck {

    private NcclGpuCheck() {}

    public static void main(String[] args) {
        try {
            System.out.println(run());
        } catch (RuntimeException e) {
            System.out.println("NCCL GPU check: FAILED: " + e);
            e.printStackTrace(System.out);
            System.exit(1);
        }
    }

    /**
     * Runs the check.
     *
     * @return a one-line summary
     * @throws IllegalStateException listing the collectives whose results differed
     */
    public static String run() {
        String library = JavaCppNccl.load().describe(); // fails here, in one line, without CUDA
        RankGrid grid = RankGrid.create(1, 1, 1, 1, 1);
        List<List<String>> perRank = DistributedWorld.run(grid, LaunchConfig.singleNode(1, Duration.ofSeconds(120)),
                RankDevices.cuda(1), ctx -> {
                    for (GroupKind kind : GroupKind.values()) {
                        if (!(ctx.group(kind) instanceof NcclProcessGroup)) {
                            throw new IllegalStateException(kind + " group is " + ctx.group(kind) + ", not NCCL");
                        }
                    }
                    TransformerConfig cfg = TransformerConfig.builder().numLayers(2).hiddenSize(64)
                            .numAttentionHeads(4).kvChannels(16).ffnHiddenSize(128).vocabSize(128)
                            .maxPositionEmbeddings(32).build();
                    GPTModel gpt = new GPTModel(ctx, cfg, false);
                    gpt.initializeRandom(1234, 0.02f);
                    long[] tokens = new long[2 * 16];
                    Arrays.setAll(tokens, i -> (i * 37L) % 128);
                    NDArray ids = ctx.manager().create(tokens, new Shape(2, 16));
                    NDArray loss = gpt.causalLmLoss(ids);
                    ctx.tape().backward(loss);
                    List<String> out = new ArrayList<>();
                    ProcessGroup tp = ctx.tensorGroup();
                    ProcessGroup dp = ctx.group(GroupKind.DATA);
                    int tensors = 0;
                    for (ShardedParameter sp : gpt.parameters()) {
                        NDArray p = sp.parameter().getArray();
                        try (NDArray g = p.getGradient()) { // a new handle on the gradient
                            check(out, sp.name() + " allReduce SUM", p, () -> tp.allReduce(p, ReduceOp.SUM));
                            check(out, sp.name() + " grad allReduce AVG", g, () -> dp.allReduce(g, ReduceOp.AVG));
                            check(out, sp.name() + " grad allReduce MAX", g, () -> tp.allReduce(g, ReduceOp.MAX));
                            check(out, sp.name() + " allGather 0", p, () -> tp.allGather(p, 0));
                            check(out, sp.name() + " allGather -1", p, () -> tp.allGather(p, -1));
                            check(out, sp.name() + " grad reduceScatter -1", g,
                                    () -> tp.reduceScatter(g, -1, ReduceOp.SUM));
                            check(out, sp.name() + " broadcast", p, () -> dp.broadcast(p, 0));
                            check(out, sp.name() + " grad reduce SUM", g, () -> dp.reduce(g, 0, ReduceOp.SUM));
                            check(out, sp.name() + " allToAll", p, () -> tp.allToAll(p, 0, -1));
                            if (TorchNative.isAvailable()) {
                                try (NDManager m = ctx.manager().newSubManager()) {
                                    NDArray half = p.toType(DataType.BFLOAT16, true);
                                    half.attach(m);
                                    check(out, sp.name() + " bf16 allReduce SUM", half, () -> tp.allReduce(half, ReduceOp.SUM));
                                    check(out, sp.name() + " bf16 allGather 0", half, () -> tp.allGather(half, 0));
                                }
                            }
                        }
                        tensors++;
                    }
                    tp.barrier();
                    out.add(0, Integer.toString(tensors));
                    return out;
                });
        List<String> result = perRank.get(0);
        List<String> differences = result.subList(1, result.size());
        if (!differences.isEmpty()) {
            throw new IllegalStateException(differences.size() + " collective(s) differed: " + differences);
        }
        return "NCCL GPU check: OK (" + result.get(0) + " parameters of a GPTModel and their gradients through "
                + "every collective on cuda:0, bfloat16 " + (TorchNative.isAvailable() ? "included" : "skipped: stock JNI")
                + "; " + library + ")";
    }

    /** Runs {@code collective} and records a difference unless its result has x's shape, dtype and bytes. */
    private static void check(List<String> out, String what, NDArray x, Supplier<NDArray> collective) {
        try (NDArray y = collective.get()) {
            if (!y.getShape().equals(x.getShape()) || y.getDataType() != x.getDataType()) {
                out.add(what + ": " + y.getDataType() + " " + y.getShape() + " instead of " + x.getDataType() + " "
                        + x.getShape());
            } else if (!Arrays.equals(y.toByteArray(), x.toByteArray())) {
                out.add(what + ": values differ");
            }
        }
    }
}
