package org.djlmegatron.cli;

import static org.djlmegatron.options.OptionChecks.nonNegative;
import static org.djlmegatron.options.OptionChecks.positive;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.List;
import java.util.Random;
import java.util.concurrent.Callable;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.models.ModelFlops;
import org.djlmegatron.nn.Norm;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.transformer.TransformerConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code bench}: forward+backward throughput of a reference GPT at several TP sizes, reported as
 * ratios to a large matmul measured in the same run, so numbers compare across machines.
 */
@Command(name = "bench", mixinStandardHelpOptions = true,
        description = "Benchmark training steps (forward+backward) of a reference GPT on CPU thread ranks.")
final class BenchCommand implements Callable<Integer> {

    @Option(names = "--num-layers", defaultValue = "4") int layers;
    @Option(names = "--hidden-size", defaultValue = "512") int hidden;
    @Option(names = "--num-attention-heads", defaultValue = "8") int heads;
    @Option(names = "--seq-length", defaultValue = "256") int seq;
    @Option(names = "--micro-batch-size", defaultValue = "4") int batch;
    @Option(names = "--vocab-size", defaultValue = "8192") int vocab;
    @Option(names = "--tp", split = ",", defaultValue = "1,2", description = "TP sizes to run (default: ${DEFAULT-VALUE})")
    List<Integer> tpSizes;
    @Option(names = "--sequence-parallel") boolean sequenceParallel;
    @Option(names = "--warmup", defaultValue = "2") int warmup;
    @Option(names = "--steps", defaultValue = "5") int steps;

    @Override
    public Integer call() {
        positive("--num-layers", layers);
        positive("--hidden-size", hidden);
        positive("--num-attention-heads", heads);
        positive("--seq-length", seq);
        positive("--micro-batch-size", batch);
        positive("--vocab-size", vocab);
        tpSizes.forEach(t -> positive("--tp", t));
        nonNegative("--warmup", warmup);
        positive("--steps", steps);
        TransformerConfig cfg = TransformerConfig.builder()
                .numLayers(layers).hiddenSize(hidden).numAttentionHeads(heads)
                .vocabSize(vocab).maxPositionEmbeddings(seq)
                .normalization(Norm.Kind.LAYER_NORM).activation(TransformerConfig.Activation.GELU_TANH)
                .positionEmbedding(TransformerConfig.PositionEmbedding.LEARNED_ABSOLUTE)
                .addQkvBias(true).addBiasLinear(true).tieEmbeddings(true).build();
        double flops = ModelFlops.training(cfg, batch, seq);
        System.out.printf("reference GPT: %d layers, hidden %d, %d heads, seq %d, batch %d, vocab %d, fp32, %s, "
                + "libtorch intra-op threads %s%n", layers, hidden, heads, seq, batch, vocab,
                Engine.getInstance().defaultDevice(), System.getProperty("ai.djl.pytorch.num_threads", "default"));
        System.out.printf("model: %.2f GFLOP per training step (Megatron counting)%n", flops / 1e9);
        double base = 0;
        for (int tp : tpSizes) {
            // the machine's own GEMM speed, measured next to each configuration (noisy hosts drift)
            double gemm = matmulGflops(2048, 5);
            double seconds = stepSeconds(cfg, tp);
            double gflops = flops / seconds / 1e9;
            double tokens = batch * seq / seconds;
            if (base == 0) {
                base = tokens;
            }
            System.out.printf("tp=%d%s: %.1f ms/step, %.0f tokens/s, %.1f GFLOP/s; matmul 2048^3 %.1f GFLOP/s; "
                    + "model/matmul %.2f; throughput vs tp=%d %.2fx%n", tp, sequenceParallel && tp > 1 ? " sp" : "",
                    seconds * 1e3, tokens, gflops, gemm, gflops / gemm, tpSizes.get(0), tokens / base);
        }
        return 0;
    }

    /** Best-of-n GFLOP/s of an n x n x n fp32 matmul on the CPU. */
    static double matmulGflops(int n, int repeats) {
        return matmulGflops(Device.cpu(), DataType.FLOAT32, n, repeats);
    }

    /** Best-of-n GFLOP/s of an n x n x n matmul in {@code type} on {@code device}. */
    static double matmulGflops(Device device, DataType type, int n, int repeats) {
        try (NDManager m = NDManager.newBaseManager(device)) {
            NDArray a = m.randomNormal(new Shape(n, n)).toType(type, false);
            NDArray b = m.randomNormal(new Shape(n, n)).toType(type, false);
            a.matMul(b).close();
            double best = Double.MAX_VALUE;
            for (int i = 0; i < repeats; i++) {
                long t0 = System.nanoTime();
                NDArray c = a.matMul(b);
                try (NDArray corner = c.get(0, 0).toType(DataType.FLOAT32, false)) {
                    corner.getFloat(); // copies to the host, so the matmul has completed
                }
                best = Math.min(best, (System.nanoTime() - t0) / 1e9);
                c.close();
            }
            return 2.0 * n * n * n / best / 1e9;
        }
    }

    /** Median seconds per training step on {@code tp} thread ranks. */
    private double stepSeconds(TransformerConfig cfg, int tp) {
        List<double[]> times = LocalWorld.run(RankGrid.create(tp, tp, 1, 1, 1), ctx -> {
            GPTModel model = new GPTModel(ctx, cfg, sequenceParallel);
            model.initializeRandom(1234, 0.02f);
            Random rng = new Random(7);
            long[] ids = new long[batch * seq];
            for (int i = 0; i < ids.length; i++) {
                ids[i] = rng.nextInt(vocab);
            }
            double[] t = new double[steps];
            for (int i = 0; i < warmup + steps; i++) {
                long t0 = System.nanoTime();
                try (NDManager step = ctx.manager().newSubManager()) {
                    NDArray input = step.create(ids, new Shape(batch, seq));
                    NDArray loss = model.causalLmLoss(input);
                    ctx.tape().backward(loss);
                    model.reducePartialGradients();
                    model.zeroGradients();
                }
                if (i >= warmup) {
                    t[i - warmup] = (System.nanoTime() - t0) / 1e9;
                }
            }
            return t;
        });
        double[] t = times.get(0).clone();
        java.util.Arrays.sort(t);
        return t[t.length / 2];
    }

}
