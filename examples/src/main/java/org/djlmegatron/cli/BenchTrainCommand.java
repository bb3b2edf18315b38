package org.djlmegatron.cli;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.djlmegatron.models.ModelFlops;
import org.djlmegatron.pretrain.PretrainGpt;
import org.djlmegatron.pretrain.PretrainOptions;
import org.djlmegatron.training.StepResult;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code bench-train}: full training steps (forward, backward, gradient reduction, optimizer) of
 * the reference GPT under several data/tensor-parallel layouts, as ratios of a same-run matmul and
 * of the first layout, with optimizer memory per rank.
 */
@Command(name = "bench-train", mixinStandardHelpOptions = true,
        description = "Benchmark training steps (tokens/s, model FLOP/s vs matmul, DP scaling, optimizer memory).")
final class BenchTrainCommand implements Callable<Integer> {

    @Option(names = "--num-layers", defaultValue = "4") int layers;
    @Option(names = "--hidden-size", defaultValue = "512") int hidden;
    @Option(names = "--num-attention-heads", defaultValue = "8") int heads;
    @Option(names = "--seq-length", defaultValue = "256") int seq;
    @Option(names = "--micro-batch-size", defaultValue = "2") int micro;
    @Option(names = "--vocab-size", defaultValue = "8192") int vocab;
    @Option(names = "--iters", defaultValue = "4", description = "timed iterations per layout (after one warm-up)") int iters;
    @Option(names = "--layouts", split = ",", defaultValue = "dp1,dp2,dp2-distopt,tp2",
            description = "layouts to run: dpN, dpN-distopt, tpN (default: ${DEFAULT-VALUE})") List<String> layouts;

    @Override
    public Integer call() {
        System.out.printf(Locale.ROOT, "reference GPT: %d layers, hidden %d, %d heads, seq %d, micro batch %d per rank, "
                + "vocab %d, fp32, global batch = micro x DP%n", layers, hidden, heads, seq, micro, vocab);
        double base = 0;
        for (String layout : layouts) {
            double gemm = BenchCommand.matmulGflops(2048, 5);
            Run r = run(layout);
            if (base == 0) {
                base = r.tokensPerS;
            }
            System.out.printf(Locale.ROOT, "%-12s %7.0f tokens/s  %6.1f GFLOP/s  matmul %6.1f GFLOP/s  model/matmul %.2f  "
                    + "throughput vs %s %.2fx  optimizer %,d bytes/rank%n", layout, r.tokensPerS, r.gflops, gemm,
                    r.gflops / gemm, layouts.get(0), r.tokensPerS / base, r.optimizerBytes);
        }
        return 0;
    }

    private record Run(double tokensPerS, double gflops, long optimizerBytes) {}

    private Run run(String layout) {
        int dp = 1;
        int tp = 1;
        boolean distopt = layout.endsWith("-distopt");
        String kind = distopt ? layout.substring(0, layout.length() - "-distopt".length()) : layout;
        if (kind.startsWith("dp")) {
            dp = Integer.parseInt(kind.substring(2));
        } else if (kind.startsWith("tp")) {
            tp = Integer.parseInt(kind.substring(2));
        } else {
            throw new IllegalArgumentException("layout " + layout + ": expected dpN, dpN-distopt or tpN");
        }
        List<String> a = new ArrayList<>(List.of("--mock-data", "--num-layers", "" + layers, "--hidden-size", "" + hidden,
                "--num-attention-heads", "" + heads, "--seq-length", "" + seq, "--vocab-size", "" + vocab,
                "--micro-batch-size", "" + micro, "--global-batch-size", "" + micro * dp, "--lr", "1e-4",
                "--train-iters", "" + (iters + 1), "--nproc-per-node", "" + dp * tp,
                "--tensor-model-parallel-size", "" + tp, "--log-interval", "1000000"));
        if (distopt) {
            a.add("--use-distributed-optimizer");
        }
        PretrainOptions o = new PretrainOptions();
        new CommandLine(o).parseArgs(a.toArray(new String[0]));
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        List<StepResult> steps = new PretrainGpt(o, new PrintStream(buf, true, StandardCharsets.UTF_8)).run();
        double seconds = 0;
        long tokens = 0;
        for (StepResult s : steps.subList(1, steps.size())) {
            seconds += s.seconds();
            tokens += s.tokens();
        }
        double flops = ModelFlops.training(o.modelConfig(), (long) micro * dp, seq) * (steps.size() - 1);
        return new Run(tokens / seconds, flops / seconds / 1e9, optimizerBytes(buf.toString(StandardCharsets.UTF_8)));
    }

    /** The "optimizer state on rank 0" figure pretrain-gpt prints. */
    private static long optimizerBytes(String log) {
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("optimizer state on rank 0: ([0-9,]+) bytes").matcher(log);
        return m.find() ? Long.parseLong(m.group(1).replace(",", "")) : -1;
    }
}
