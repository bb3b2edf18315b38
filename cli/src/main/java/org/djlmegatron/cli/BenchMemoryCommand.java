package org.djlmegatron.cli;

import static org.djlmegatron.options.OptionChecks.positive;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.djlmegatron.pretrain.PretrainGpt;
import org.djlmegatron.pretrain.PretrainOptions;
import org.djlmegatron.pretrain.RankMemoryLine;
import org.djlmegatron.training.buffers.RankMemory;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code bench-memory}: one training step of a GPT per data-parallel size and sharding strategy
 * (thread ranks), printing the model-state bytes rank 0 holds afterwards, measured from its arrays
 * (pretrain-gpt's memory line), per parameter and next to the ZeRO figures Megatron documents.
 */
@Command(name = "bench-memory", mixinStandardHelpOptions = true,
        description = "Measured parameter, gradient and optimizer bytes per rank for each --data-parallel-sharding-strategy "
                + "at several data-parallel sizes, next to Megatron's per-parameter formulas.")
final class BenchMemoryCommand implements Callable<Integer> {

    @Option(names = "--num-layers", defaultValue = "4", description = "transformer layers (default: ${DEFAULT-VALUE}, the reference GPT)") int layers;
    @Option(names = "--hidden-size", defaultValue = "512", description = "hidden size (default: ${DEFAULT-VALUE})") int hidden;
    @Option(names = "--num-attention-heads", defaultValue = "8", description = "attention heads (default: ${DEFAULT-VALUE})") int heads;
    @Option(names = "--vocab-size", defaultValue = "8192", description = "vocabulary size (default: ${DEFAULT-VALUE})") int vocab;
    @Option(names = "--seq-length", defaultValue = "32", description = "tokens per sequence of the one step run "
            + "(model state does not depend on it) (default: ${DEFAULT-VALUE})") int seq;
    @Option(names = "--dp", split = ",", defaultValue = "2,4", description = "data-parallel sizes (thread ranks) "
            + "(default: ${DEFAULT-VALUE})") List<Integer> dpSizes;
    @Option(names = "--strategies", split = ",", defaultValue = "no_shard,optim,optim_grads,optim_grads_params",
            description = "--data-parallel-sharding-strategy values to run (optim_grads and optim_grads_params need the native library) "
                    + "(default: ${DEFAULT-VALUE})") List<String> strategies;
    @Option(names = "--bf16", description = "bf16 weights with fp32 masters (native library) (default: fp32)") boolean bf16;

    @Override
    public Integer call() {
        positive("--num-layers", layers);
        positive("--hidden-size", hidden);
        positive("--num-attention-heads", heads);
        positive("--vocab-size", vocab);
        positive("--seq-length", seq);
        System.out.printf(Locale.ROOT, "GPT: %d layers, hidden %d, %d heads, vocab %d, %s; bytes rank 0 holds after "
                + "one step (measured), per parameter of the model, and the ZeRO figure (d = DP)%n", layers, hidden,
                heads, vocab, bf16 ? "bf16 weights, fp32 masters and gradients" : "fp32");
        System.out.printf(Locale.ROOT, "%-4s %-12s %14s %8s %8s %8s %8s   %-24s %8s%n", "DP", "strategy", "rank bytes",
                "param", "grad", "optim", "total", "Megatron/ZeRO formula", "= B/p");
        for (int dp : dpSizes) {
            positive("--dp", dp);
            for (String s : strategies) {
                String log = runOneStep(dp, s);
                RankMemory m = RankMemoryLine.parse(log);
                double[] per = m.perParameter(parameters(log));
                String formula = formula(s, bf16);
                System.out.printf(Locale.ROOT, "%-4d %-12s %,14d %8.3f %8.3f %8.3f %8.3f   %-24s %8.3f%n", dp, s,
                        m.total(), per[0], per[1], per[2], per[3], formula, evaluate(s, bf16, dp));
            }
        }
        return 0;
    }

    private String runOneStep(int dp, String strategy) {
        List<String> args = new ArrayList<>(List.of("--mock-data", "--num-layers", "" + layers, "--hidden-size",
                "" + hidden, "--num-attention-heads", "" + heads, "--seq-length", "" + seq, "--max-position-embeddings",
                "" + seq, "--vocab-size", "" + vocab, "--lr", "1e-4", "--train-iters", "1", "--micro-batch-size", "1",
                "--global-batch-size", "" + dp, "--nproc-per-node", "" + dp, "--log-interval", "1000000",
                "--data-parallel-sharding-strategy", strategy));
        if (bf16) {
            args.add("--bf16");
        }
        PretrainOptions o = new PretrainOptions();
        new CommandLine(o).parseArgs(args.toArray(new String[0]));
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        new PretrainGpt(o, new PrintStream(buf, true, StandardCharsets.UTF_8)).run();
        return buf.toString(StandardCharsets.UTF_8);
    }

    private static long parameters(String log) {
        Matcher m = Pattern.compile("number of parameters: ([\\d,]+)").matcher(log);
        if (!m.find()) {
            throw new IllegalStateException("no 'number of parameters' line in the pretrain-gpt output");
        }
        return Long.parseLong(m.group(1).replace(",", ""));
    }

    /**
     * Megatron's figures per parameter (distrib_optimizer.md; the ZeRO paper's K = 12 for Adam's
     * fp32 masters and moments): fp32 weights need no separate masters (K = 8); our bf16 keeps a
     * bf16 gradient buffer beside the fp32 main gradient (2 + 4), Megatron's only the latter (4).
     */
    static String formula(String strategy, boolean bf16) {
        String w = bf16 ? "2" : "4";
        String g = "4"; // fp32 main gradients either way
        String k = bf16 ? "12" : "8";
        return switch (strategy) {
            case "no_shard" -> w + " + " + g + " + " + k;
            case "optim" -> w + " + " + g + " + " + k + "/d";
            case "optim_grads" -> w + " + (" + g + " + " + k + ")/d";
            case "optim_grads_params" -> "(" + w + " + " + g + " + " + k + ")/d";
            default -> "?";
        };
    }

    static double evaluate(String strategy, boolean bf16, int d) {
        double w = bf16 ? 2 : 4;
        double g = 4;
        double k = bf16 ? 12 : 8;
        return switch (strategy) {
            case "no_shard" -> w + g + k;
            case "optim" -> w + g + k / d;
            case "optim_grads" -> w + (g + k) / d;
            case "optim_grads_params" -> (w + g + k) / d;
            default -> Double.NaN;
        };
    }
}
