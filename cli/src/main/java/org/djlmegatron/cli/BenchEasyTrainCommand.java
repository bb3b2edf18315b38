package org.djlmegatron.cli;

import static org.djlmegatron.options.OptionChecks.positive;

import ai.djl.Model;
import ai.djl.training.listener.TrainingListener;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.djlmegatron.launch.DistributedWorld;
import org.djlmegatron.comm.LaunchConfig;
import org.djlmegatron.data.batches.MockData;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.pretrain.EasyTrainRun;
import org.djlmegatron.pretrain.PretrainGpt;
import org.djlmegatron.pretrain.PretrainOptions;
import org.djlmegatron.training.StepResult;
import org.djlmegatron.training.djl.ParallelTrainer;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code bench-easytrain}: the cost of DJL's training loop around the distributed step. The same
 * model, mock data and layout are trained by {@code pretrain-gpt}'s driver and by
 * {@code EasyTrain.fit} through {@code ParallelTrainer} in one run; prints each one's step time
 * (forward, backward and step, as {@code StepResult} measures it), EasyTrain's whole time per
 * iteration (DJL's batching and listeners included), and their ratios.
 */
@Command(name = "bench-easytrain", mixinStandardHelpOptions = true,
        description = "Benchmark EasyTrain.fit through ParallelTrainer against pretrain-gpt's driver (same model, data, layout).")
final class BenchEasyTrainCommand implements Callable<Integer> {

    @Option(names = "--num-layers", defaultValue = "2", description = "default: ${DEFAULT-VALUE}") int layers;
    @Option(names = "--hidden-size", defaultValue = "256", description = "default: ${DEFAULT-VALUE}") int hidden;
    @Option(names = "--num-attention-heads", defaultValue = "8", description = "default: ${DEFAULT-VALUE}") int heads;
    @Option(names = "--seq-length", defaultValue = "128", description = "default: ${DEFAULT-VALUE}") int seq;
    @Option(names = "--vocab-size", defaultValue = "1024", description = "default: ${DEFAULT-VALUE}") int vocab;
    @Option(names = "--micro-batch-size", defaultValue = "4", description = "default: ${DEFAULT-VALUE}") int micro;
    @Option(names = "--micro-batches", defaultValue = "2",
            description = "micro-batches per step and DP rank (default: ${DEFAULT-VALUE})") int microBatches;
    @Option(names = "--tensor-model-parallel-size", defaultValue = "2", description = "default: ${DEFAULT-VALUE}") int tp;
    @Option(names = "--data-parallel-size", defaultValue = "1", description = "default: ${DEFAULT-VALUE}") int dp;
    @Option(names = "--iters", defaultValue = "6",
            description = "timed iterations (after one warm-up; default: ${DEFAULT-VALUE})") int iters;

    @Override
    public Integer call() {
        positive("--iters", iters);
        positive("--micro-batches", microBatches);
        int gbs = micro * microBatches * dp;
        List<String> args = List.of("--mock-data", "--num-layers", "" + layers, "--hidden-size", "" + hidden,
                "--num-attention-heads", "" + heads, "--seq-length", "" + seq, "--max-position-embeddings", "" + seq,
                "--vocab-size", "" + vocab, "--micro-batch-size", "" + micro, "--global-batch-size", "" + gbs,
                "--lr", "1e-4", "--train-iters", "" + (iters + 1), "--nproc-per-node", "" + tp * dp,
                "--tensor-model-parallel-size", "" + tp, "--log-interval", "1000000");
        PretrainOptions o = new PretrainOptions();
        new CommandLine(o).parseArgs(args.toArray(new String[0]));
        System.out.printf(Locale.ROOT, "GPT: %d layers, hidden %d, %d heads, seq %d, vocab %d; TP %d x DP %d, "
                + "global batch %d (%d micro-batches of %d per DP rank), %d timed iterations%n", layers, hidden, heads,
                seq, vocab, tp, dp, gbs, microBatches, micro, iters);
        List<StepResult> driver = new PretrainGpt(o, new PrintStream(new ByteArrayOutputStream(), true,
                StandardCharsets.UTF_8)).run();
        long t0 = System.nanoTime();
        List<StepResult> easy = easyTrain(o);
        double easyWall = (System.nanoTime() - t0) / 1e9;
        double driverStep = stepSeconds(driver);
        double easyStep = stepSeconds(easy);
        double easyWallPerIter = easyWall / (iters + 1);
        System.out.printf(Locale.ROOT, "pretrain-gpt driver   step %.4f s%n", driverStep);
        System.out.printf(Locale.ROOT, "EasyTrain.fit         step %.4f s (%.3fx of the driver's)  whole iteration %.4f s "
                + "(%.3fx of the driver's step; start-up and warm-up included)%n", easyStep, easyStep / driverStep,
                easyWallPerIter, easyWallPerIter / driverStep);
        System.out.printf(Locale.ROOT, "same losses: %s%n", sameLosses(driver, easy));
        return 0;
    }

    /** Mean seconds of the steps after the first (the warm-up). */
    private static double stepSeconds(List<StepResult> steps) {
        return steps.subList(1, steps.size()).stream().mapToDouble(StepResult::seconds).average().orElseThrow();
    }

    private static boolean sameLosses(List<StepResult> a, List<StepResult> b) {
        if (a.size() != b.size()) {
            return false;
        }
        for (int i = 0; i < a.size(); i++) {
            if (Double.doubleToLongBits(a.get(i).loss()) != Double.doubleToLongBits(b.get(i).loss())) {
                return false;
            }
        }
        return true;
    }

    /** The same run through DJL: a Model per rank, ParallelTrainer, EasyTrain.fit (dropout as pretrain-gpt's). */
    private static List<StepResult> easyTrain(PretrainOptions o) {
        MockData data = new MockData(o.seqLength, o.modelConfig().vocabSize(), o.seed);
        int world = o.nprocPerNode;
        RankGrid grid = RankGrid.create(world, o.tensorModelParallelSize, 1, 1, 1);
        return DistributedWorld.run(grid, LaunchConfig.singleNode(world, Duration.ofSeconds(600)),
                ctx -> EasyTrainRun.onRank(ctx, o, data, List.of(TrainingListener.Defaults.basic()))).get(0);
    }
}
