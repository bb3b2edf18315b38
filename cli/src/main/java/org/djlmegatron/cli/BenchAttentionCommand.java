package org.djlmegatron.cli;

import static org.djlmegatron.options.OptionChecks.nonNegative;
import static org.djlmegatron.options.OptionChecks.positive;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import java.util.List;
import java.util.concurrent.Callable;
import org.djlmegatron.engine.TorchNative;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code bench-attention}: forward and backward of the native library's causal self-attention with
 * its queries in blocks of several sizes, against one block (the whole masked square, as the
 * composed attention ran before blocks), interleaved in every round of one run, the order rotated
 * from round to round (what runs after what changes its time: allocation and cache state).
 */
@Command(name = "bench-attention", mixinStandardHelpOptions = true,
        description = "Time the native causal attention (forward+backward) with queries in blocks of several sizes "
                + "against one block (the whole masked square), interleaved in one run, with ratios.")
final class BenchAttentionCommand implements Callable<Integer> {

    @Option(names = "--micro-batch-size", defaultValue = "2", description = "batch (default: ${DEFAULT-VALUE})")
    int batch;

    @Option(names = "--num-attention-heads", defaultValue = "8", description = "heads (default: ${DEFAULT-VALUE})")
    int heads;

    @Option(names = "--kv-channels", defaultValue = "64", description = "head size (default: ${DEFAULT-VALUE})")
    int headDim;

    @Option(names = "--seq-length", split = ",", defaultValue = "256,1024",
            description = "sequence lengths (default: ${DEFAULT-VALUE})")
    List<Integer> seqLengths;

    @Option(names = "--block-rows", split = ",", defaultValue = "64,128,256",
            description = "query rows per block to compare with one block (default: ${DEFAULT-VALUE}; the library's "
                    + "own is " + TorchNative.CAUSAL_BLOCK_ROWS + ")")
    List<Integer> blockRows;

    @Option(names = "--bf16", description = "bf16 q, k, v (default: fp32)")
    boolean bf16;

    @Option(names = "--warmup", defaultValue = "2", description = "untimed rounds (default: ${DEFAULT-VALUE})")
    int warmup;

    @Option(names = "--steps", defaultValue = "10", description = "timed rounds (default: ${DEFAULT-VALUE})")
    int steps;

    @Override
    public Integer call() {
        positive("--micro-batch-size", batch);
        positive("--num-attention-heads", heads);
        positive("--kv-channels", headDim);
        seqLengths.forEach(s -> positive("--seq-length", s));
        blockRows.forEach(b -> positive("--block-rows", b));
        nonNegative("--warmup", warmup);
        positive("--steps", steps);
        if (!TorchNative.isAvailable()) {
            throw new IllegalArgumentException("bench-attention times the project's native library, which is not "
                    + "loaded: set PYTORCH_LIBRARY_PATH (docs/native.md)");
        }
        System.out.printf("causal self-attention, batch %d, %d heads of %d, %s, forward+backward; %s; %d timed "
                + "rounds after %d warm-up%n", batch, heads, headDim, bf16 ? "bf16" : "fp32",
                TorchNative.version(), steps, warmup);
        for (int seq : seqLengths) {
            double[] seconds = measure(seq);
            System.out.printf("  seq %5d  one block %8.2f ms%n", seq, seconds[0] * 1e3 / steps);
            for (int i = 0; i < blockRows.size(); i++) {
                System.out.printf("  seq %5d  blocks of %4d %8.2f ms = %.2fx one block%n", seq, blockRows.get(i),
                        seconds[i + 1] * 1e3 / steps, seconds[i + 1] / seconds[0]);
            }
        }
        return 0;
    }

    /** Seconds per variant (one block, then each --block-rows), summed over the timed rounds. */
    private double[] measure(int seq) {
        double[] seconds = new double[blockRows.size() + 1];
        boolean gradMode = JniUtils.isGradMode();
        JniUtils.setGradMode(true); // record autograd, as a training step's GradientCollector does
        try (NDManager m = NDManager.newBaseManager()) {
            Shape shape = new Shape(batch, heads, seq, headDim);
            DataType type = bf16 ? DataType.BFLOAT16 : DataType.FLOAT32;
            NDArray[] qkv = new NDArray[3];
            for (int i = 0; i < 3; i++) {
                qkv[i] = m.randomNormal(shape).toType(type, false);
                qkv[i].setRequiresGradient(true);
            }
            NDArray upstream = m.randomNormal(shape).toType(type, false);
            double scale = 1 / Math.sqrt(headDim);
            for (int round = 0; round < warmup + steps; round++) {
                for (int k = 0; k < seconds.length; k++) {
                    int v = (round + k) % seconds.length; // each variant in every position of a round in turn
                    int rows = v == 0 ? 0 : blockRows.get(v - 1);
                    try (NDManager step = m.newSubManager()) {
                        long start = System.nanoTime();
                        NDArray out = TorchNative.scaledDotProductAttention(qkv[0], qkv[1], qkv[2], true, scale, rows);
                        out.attach(step);
                        JniUtils.backward((PtNDArray) out, (PtNDArray) upstream, false, false);
                        if (round >= warmup) {
                            seconds[v] += (System.nanoTime() - start) / 1e9;
                        }
                    }
                }
            }
        } finally {
            JniUtils.setGradMode(gradMode);
        }
        return seconds;
    }
}
