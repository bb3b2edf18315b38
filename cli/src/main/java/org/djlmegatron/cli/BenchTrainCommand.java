package org.djlmegatron.cli;

import static org.djlmegatron.options.OptionChecks.positive;

import ai.djl.Device;
import ai.djl.ndarray.types.DataType;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.djlmegatron.comm.RankDevices;
import org.djlmegatron.engine.ThreadBudget;
import org.djlmegatron.models.ModelFlops;
import org.djlmegatron.pretrain.PretrainGpt;
import org.djlmegatron.pretrain.PretrainOptions;
import org.djlmegatron.training.StepResult;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code bench-train}: full training steps (forward, backward, gradient reduction, optimizer) of
 * a GPT under several data/tensor-parallel layouts, as ratios of a same-run matmul (same device,
 * same dtype) and of the first layout, with optimizer memory per rank and, given a peak, MFU.
 */
@Command(name = "bench-train", mixinStandardHelpOptions = true,
        description = "Benchmark training steps (tokens/s, model FLOP/s vs matmul, MFU, DP scaling, optimizer memory).")
final class BenchTrainCommand implements Callable<Integer> {

    /** GPT shapes of platform-facts.md's H100 anchors (GPT-2 style: LayerNorm, GELU, learned positions, tied). */
    enum Preset {
        REFERENCE(4, 512, 8, 256, 2, 8192),
        GPT_124M(12, 768, 12, 1024, 16, 50304),
        GPT_350M(24, 1024, 16, 1024, 16, 50304),
        GPT_1_3B(24, 2048, 16, 2048, 8, 50304);

        final int layers;
        final int hidden;
        final int heads;
        final int seq;
        final int micro;
        final int vocab;

        Preset(int layers, int hidden, int heads, int seq, int micro, int vocab) {
            this.layers = layers;
            this.hidden = hidden;
            this.heads = heads;
            this.seq = seq;
            this.micro = micro;
            this.vocab = vocab;
        }

        static Preset parse(String name) {
            String n = name.toUpperCase(Locale.ROOT).replace('-', '_').replace('.', '_');
            try {
                return valueOf(n);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("--preset must be reference, gpt-124m, gpt-350m or gpt-1.3b, found " + name);
            }
        }
    }

    @Option(names = "--preset", defaultValue = "reference",
            description = "model and batch: reference, gpt-124m, gpt-350m, gpt-1.3b (default: ${DEFAULT-VALUE})") String preset;
    @Option(names = "--num-layers") Integer layers;
    @Option(names = "--hidden-size") Integer hidden;
    @Option(names = "--num-attention-heads") Integer heads;
    @Option(names = "--seq-length") Integer seq;
    @Option(names = "--micro-batch-size", description = "per rank") Integer micro;
    @Option(names = "--vocab-size") Integer vocab;
    @Option(names = "--num-experts", defaultValue = "0", description = "an MoE model: experts per layer (layouts epN "
            + "then apply; the dispatcher's share of the step is printed) (default: ${DEFAULT-VALUE})") int numExperts;
    @Option(names = "--moe-router-topk", defaultValue = "2", description = "experts per token (default: ${DEFAULT-VALUE})")
    int topK;
    @Option(names = "--moe-token-dispatcher-type", defaultValue = "alltoall",
            description = "alltoall or allgather, for epN layouts (default: ${DEFAULT-VALUE})") String dispatcher;
    @Option(names = "--moe-shared-expert-intermediate-size", description = "shared experts of this width in the MoE "
            + "model (layouts epN-sharedoverlap then apply: --moe-shared-expert-overlap) (default: none)") Integer sharedExperts;
    @Option(names = "--iters", defaultValue = "4", description = "timed iterations per layout (after one warm-up)") int iters;
    @Option(names = "--layouts", split = ",", defaultValue = "dp1,dp2,dp2-distopt,tp2",
            description = "layouts to run: dpN, dpN-distopt, dpN-zero2 (--data-parallel-sharding-strategy optim_grads, native library), dpN-zero3 (optim_grads_params, native library; "
                    + "the step time ratio column compares it with the first layout, e.g. dp2-distopt), tpN, cpN (context parallelism, ring attention) or cpN-all_gather / "
                    + "cpN-a2a, ppN (1F1B over N stages; prints the measured bubble, the bubble replayed on one device per "
                    + "stage from the measured pass times, and Megatron's (p-1)/(v*m)), "
                    + "ppN-vpV (interleaved 1F1B, V model chunks per rank; bubble vs (p-1)/(v*m)), epN (with --num-experts), "
                    + "each optionally suffixed -grouped (--moe-grouped-gemm, MoE only), then -sharedoverlap (--moe-shared-expert-overlap, "
                    + "with --moe-shared-expert-intermediate-size), then -full (full recomputation, "
                    + "uniform, 1 layer) or -selective (core attention), then optionally -flatstep (the step without the "
                    + "contiguous parameter/gradient buffers, for comparison) or -overlap (--overlap-grad-reduce, and "
                    + "--overlap-param-gather with -distopt, -zero2 or -zero3; prints the step time over the same layout without it, when "
                    + "that ran before, and the share of the overlapped communication hidden) (default: ${DEFAULT-VALUE})") List<String> layouts;
    @Option(names = "--micro-batches", defaultValue = "1", description = "micro-batches per step and DP rank "
            + "(global batch = micro x this x DP; pipelining needs several) (default: ${DEFAULT-VALUE})") int microBatches;
    @Option(names = "--dropout", defaultValue = "0", description = "hidden and attention dropout of the benchmarked model "
            + "(default: ${DEFAULT-VALUE}, as the PyTorch peer)") double dropout;
    @Option(names = "--device", defaultValue = "cpu", description = "cpu or cuda (default: ${DEFAULT-VALUE})") String device;
    @Option(names = "--bf16", description = "bf16 weights and arithmetic (native library)") boolean bf16;
    @Option(names = "--attention-backend", defaultValue = "auto") String attentionBackend;
    @Option(names = "--peak-tflops", description = "the device's peak dense TFLOP/s in the run's dtype, for MFU "
            + "(H100/H200 SXM bf16: 989)") Double peakTflops;
    @Option(names = "--vs-pytorch", description = "after layout dp1, run PyTorch eager's step on the same "
            + "model, batch, micro-batches, precision and threads, and print ours / PyTorch (default: off)") boolean vsPytorch;
    @Option(names = "--ddp-bucket-size", description = "elements per gradient reduction bucket, as pretrain-gpt's "
            + "(default: pretrain-gpt's, 40M: one bucket for the reference GPT, so -overlap has nothing to overlap)") Long ddpBucketSize;
    @Option(names = "--python", defaultValue = "/usr/bin/python3", description = "the python3 with torch for --vs-pytorch "
            + "(Debian's python3-torch: the libtorch the native library is built against) (default: ${DEFAULT-VALUE})")
    String python;
    @Option(names = "--profile-dir", description = "after the timed iterations, one more under libtorch's profiler "
            + "(pretrain-gpt's --profile, rank 0; not timed), written to DIR/<layout>/, and with --vs-pytorch the same "
            + "for PyTorch's step (DIR/pytorch.json); prints the operators that took the most time on each side "
            + "(default: none)") java.nio.file.Path profileDir;
    @Option(names = "--pytorch-timeout", defaultValue = "3600", description = "seconds the PyTorch peer may take "
            + "(default: ${DEFAULT-VALUE})") long pytorchTimeout;

    @Override
    public Integer call() {
        positive("--num-layers", layers);
        positive("--hidden-size", hidden);
        positive("--num-attention-heads", heads);
        positive("--seq-length", seq);
        positive("--micro-batch-size", micro);
        positive("--vocab-size", vocab);
        positive("--iters", iters);
        positive("--pytorch-timeout", pytorchTimeout);
        PytorchEagerPeer peer = vsPytorch ? new PytorchEagerPeer(java.nio.file.Path.of(python), pytorchTimeout) : null;
        Preset p = Preset.parse(preset);
        int l = layers != null ? layers : p.layers;
        int h = hidden != null ? hidden : p.hidden;
        int a = heads != null ? heads : p.heads;
        int s = seq != null ? seq : p.seq;
        int mb = micro != null ? micro : p.micro;
        int v = vocab != null ? vocab : p.vocab;
        DataType type = bf16 ? DataType.BFLOAT16 : DataType.FLOAT32;
        Device dev = RankDevices.parse(device, 1).of(0);
        System.out.printf(Locale.ROOT, "GPT %s: %d layers, hidden %d, %d heads, seq %d, micro batch %d per rank, vocab %d, "
                + "%s on %s, global batch = micro x %d micro-batches x DP%n", p.name().toLowerCase(Locale.ROOT), l, h, a, s, mb, v,
                bf16 ? "bf16" : "fp32", dev, microBatches);
        double base = 0;
        double baseStep = 0;
        java.util.Map<String, Double> stepOf = new java.util.HashMap<>();
        for (String layout : layouts) {
            double gemm = BenchCommand.matmulGflops(dev, type, dev.isGpu() ? 8192 : 2048, 5);
            Run r = run(layout, l, h, a, s, mb, v);
            if (base == 0) {
                base = r.tokensPerS;
                baseStep = r.stepSeconds;
            }
            String mfu = peakTflops == null ? "" : String.format(Locale.ROOT, "  MFU %.3f", r.gflops / 1e3 / peakTflops);
            if (numExperts > 0) {
                mfu += String.format(Locale.ROOT, "  dispatcher %.1f ms/step (%.1f%% of the step)", r.dispatchSeconds * 1e3,
                        100 * r.dispatchSeconds / r.stepSeconds);
            }
            System.out.printf(Locale.ROOT, "%-16s %9.0f tokens/s  %8.1f GFLOP/s  matmul %8.1f GFLOP/s  model/matmul %.2f  "
                    + "throughput vs %s %.2fx  step %.3f s (%.2fx of %s)  optimizer %,d bytes/rank  held for backward %.1f MB/rank%s%s%n",
                    layout, r.tokensPerS, r.gflops, gemm, r.gflops / gemm, layouts.get(0), r.tokensPerS / base,
                    r.stepSeconds, r.stepSeconds / baseStep, layouts.get(0), r.optimizerBytes, r.heldBytes / 1048576.0,
                    r.bubble, mfu);
            printProfile(layout, r.trace);
            stepOf.put(layout, r.stepSeconds);
            Double without = layout.endsWith("-overlap") ? stepOf.get(layout.substring(0, layout.length() - 8)) : null;
            if (without != null) {
                System.out.printf(Locale.ROOT, "%-16s step with overlap / without: %.3f (%.3f s vs %.3f s)%n", "",
                        r.stepSeconds / without, r.stepSeconds, without);
            }
            if (peer != null && oneRank(layout)) {
                int threads = ThreadBudget.intraOpThreads(null, 1);
                java.nio.file.Path pyTrace = profileDir == null ? null : profileDir.toAbsolutePath().resolve("pytorch.json");
                PytorchEagerPeer.Result py = peer.run(l, h, a, s, mb, v, microBatches, iters, threads, bf16, pyTrace);
                System.out.printf(Locale.ROOT, "%-16s %9.0f tokens/s  %8.1f GFLOP/s  matmul %8.1f GFLOP/s  model/matmul %.2f  "
                        + "(PyTorch %s eager, %d threads%s)  ours / PyTorch %.2fx%n", "  pytorch", py.tokensPerS(),
                        py.gflops(), py.matmulGflops(), py.gflops() / py.matmulGflops(), py.torch(), py.threads(),
                        bf16 ? ", autocast bf16" : "", r.tokensPerS / py.tokensPerS());
                printProfile("pytorch", pyTrace);
            }
        }
        return 0;
    }

    /** Whether the PyTorch peer runs the same thing: one rank, no recomputation (the peer is one plain process). */
    private static boolean oneRank(String layout) {
        return layout.equals("dp1");
    }

    /** The DistributedStep's switch between the contiguous buffers (native library) and the flat-vector step. */
    private static final String GRAD_BUFFERS = "djlm.gradBuffers";

    private record Run(double tokensPerS, double gflops, long optimizerBytes, long heldBytes, double stepSeconds,
            String bubble, double dispatchSeconds, java.nio.file.Path trace) {}

    /** The profiled iteration's operators, most self time first (nothing without --profile-dir). */
    private static void printProfile(String who, java.nio.file.Path trace) {
        if (trace == null) {
            return;
        }
        try {
            org.djlmegatron.profile.ProfileSummary summary = org.djlmegatron.profile.ProfileSummary.read(trace);
            System.out.printf(Locale.ROOT, "%-16s profile %s: %.1f ms in operators%n%s", "  " + who, trace,
                    summary.totalMicros() / 1e3, summary.table(12).indent(18));
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    private Run run(String layout, int l, int h, int a, int s, int mb, int v) {
        int dp = 1;
        int tp = 1;
        int cp = 1;
        String cpComm = "p2p";
        int ep = 1;
        String kind = layout;
        List<String> recompute = List.of();
        boolean overlap = kind.endsWith("-overlap"); // --overlap-grad-reduce (+ --overlap-param-gather under -distopt/-zero2)
        kind = overlap ? kind.substring(0, kind.length() - "-overlap".length()) : kind;
        boolean flatStep = kind.endsWith("-flatstep");
        if (flatStep) { // the step before the contiguous buffers, for comparison in the same run
            kind = kind.substring(0, kind.length() - "-flatstep".length());
        }
        if (kind.endsWith("-full")) {
            recompute = List.of("--recompute-granularity", "full", "--recompute-method", "uniform", "--recompute-num-layers", "1");
            kind = kind.substring(0, kind.length() - "-full".length());
        } else if (kind.endsWith("-selective")) {
            recompute = List.of("--recompute-activations");
            kind = kind.substring(0, kind.length() - "-selective".length());
        }
        boolean sharedOverlap = kind.endsWith("-sharedoverlap"); // --moe-shared-expert-overlap
        kind = sharedOverlap ? kind.substring(0, kind.length() - "-sharedoverlap".length()) : kind;
        boolean grouped = kind.endsWith("-grouped"); // --moe-grouped-gemm
        kind = grouped ? kind.substring(0, kind.length() - "-grouped".length()) : kind;
        int pp = 1;
        int vp = 1;
        java.util.regex.Matcher pipe = java.util.regex.Pattern.compile("pp(\\d+)(?:-vp(\\d+))?").matcher(kind);
        if (pipe.matches()) {
            pp = Integer.parseInt(pipe.group(1));
            vp = pipe.group(2) == null ? 1 : Integer.parseInt(pipe.group(2));
            kind = "dp1";
        }
        boolean zero2 = kind.endsWith("-zero2"); // --data-parallel-sharding-strategy optim_grads
        kind = zero2 ? kind.substring(0, kind.length() - "-zero2".length()) : kind;
        boolean zero3 = kind.endsWith("-zero3"); // --data-parallel-sharding-strategy optim_grads_params
        kind = zero3 ? kind.substring(0, kind.length() - "-zero3".length()) : kind;
        boolean distopt = kind.endsWith("-distopt");
        kind = distopt ? kind.substring(0, kind.length() - "-distopt".length()) : kind;
        if (kind.startsWith("dp")) {
            dp = Integer.parseInt(kind.substring(2));
        } else if (kind.startsWith("tp")) {
            tp = Integer.parseInt(kind.substring(2));
        } else if (kind.startsWith("cp")) {
            int dash = kind.indexOf('-');
            cp = Integer.parseInt(dash < 0 ? kind.substring(2) : kind.substring(2, dash));
            cpComm = dash < 0 ? cpComm : kind.substring(dash + 1);
        } else if (kind.startsWith("ep") && numExperts > 0) {
            ep = Integer.parseInt(kind.substring(2));
            dp = ep; // expert parallelism is carved out of data parallelism
        } else {
            throw new IllegalArgumentException("layout " + layout + ": expected dpN, dpN-distopt, dpN-zero2, dpN-zero3, tpN, "
                    + "cpN[-p2p|-all_gather|-a2a], ppN, ppN-vpV or (with --num-experts) epN, "
                    + "optionally followed by -grouped (with --num-experts), then -sharedoverlap, then -full or -selective, "
                    + "then -flatstep, then -overlap");
        }
        List<String> args = new ArrayList<>(List.of("--mock-data", "--num-layers", "" + l, "--hidden-size", "" + h,
                "--num-attention-heads", "" + a, "--seq-length", "" + s, "--vocab-size", "" + v,
                "--micro-batch-size", "" + mb, "--global-batch-size", "" + mb * dp * microBatches, "--lr", "1e-4",
                "--train-iters", "" + (iters + 1 + (profileDir == null ? 0 : 1)), "--nproc-per-node", "" + dp * tp * cp * pp,
                "--context-parallel-size", "" + cp, "--cp-comm-type", cpComm,
                "--pipeline-model-parallel-size", "" + pp,
                "--tensor-model-parallel-size", "" + tp, "--log-interval", "1000000", "--device", device,
                "--attention-backend", attentionBackend, "--hidden-dropout", "" + dropout, "--attention-dropout", "" + dropout));
        args.addAll(recompute);
        if (vp > 1) {
            args.addAll(List.of("--virtual-pipeline-model-parallel-size", "" + vp));
        }
        java.nio.file.Path metrics = null;
        if (numExperts > 0) {
            try {
                metrics = java.nio.file.Files.createTempFile("bench-train-moe", ".jsonl");
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
            args.addAll(List.of("--num-experts", "" + numExperts, "--moe-router-topk", "" + topK,
                    "--expert-model-parallel-size", "" + ep, "--moe-token-dispatcher-type", dispatcher,
                    "--metrics-out", metrics.toString()));
            if (grouped) {
                args.add("--moe-grouped-gemm");
            }
            if (sharedExperts != null) {
                args.addAll(List.of("--moe-shared-expert-intermediate-size", "" + sharedExperts));
            }
            if (sharedOverlap) {
                args.add("--moe-shared-expert-overlap");
            }
        }
        if (distopt) {
            args.add("--use-distributed-optimizer");
        }
        if (zero2) {
            args.addAll(List.of("--data-parallel-sharding-strategy", "optim_grads"));
        }
        if (zero3) {
            args.addAll(List.of("--data-parallel-sharding-strategy", "optim_grads_params"));
        }
        if (ddpBucketSize != null) {
            args.addAll(List.of("--ddp-bucket-size", "" + ddpBucketSize));
        }
        if (overlap) {
            args.addAll(distopt || zero2 || zero3 ? List.of("--overlap-grad-reduce", "--overlap-param-gather")
                    : List.of("--overlap-grad-reduce"));
        }
        if (bf16) {
            args.add("--bf16");
        }
        java.nio.file.Path trace = null;
        if (profileDir != null) { // one more iteration, profiled and not timed
            java.nio.file.Path dir = profileDir.toAbsolutePath().resolve(layout);
            args.addAll(List.of("--profile", "--profile-step-start", "" + (iters + 1), "--profile-step-end", "" + (iters + 2),
                    "--profile-dir", dir.toString()));
            trace = dir.resolve("rank0-iters" + (iters + 1) + "-" + (iters + 2) + ".json");
        }
        PretrainOptions o = new PretrainOptions();
        new CommandLine(o).parseArgs(args.toArray(new String[0]));
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        String buffers = System.getProperty(GRAD_BUFFERS);
        System.setProperty(GRAD_BUFFERS, String.valueOf(!flatStep));
        List<StepResult> steps;
        try {
            steps = new PretrainGpt(o, new PrintStream(buf, true, StandardCharsets.UTF_8)).run();
        } finally {
            if (buffers == null) {
                System.clearProperty(GRAD_BUFFERS);
            } else {
                System.setProperty(GRAD_BUFFERS, buffers);
            }
        }
        double seconds = 0;
        long tokens = 0;
        if (trace != null) {
            steps = steps.subList(0, steps.size() - 1); // the profiled iteration is not timed
        }
        for (StepResult r : steps.subList(1, steps.size())) {
            seconds += r.seconds();
            tokens += r.tokens();
        }
        double flops = ModelFlops.training(o.modelConfig(), (long) mb * dp * microBatches, s) * (steps.size() - 1);
        String log = buf.toString(StandardCharsets.UTF_8);
        double dispatch = metrics == null ? 0 : dispatchSeconds(metrics) / (steps.size() - 1);
        return new Run(tokens / seconds, flops / seconds / 1e9, optimizerBytes(log), heldBytes(log),
                seconds / (steps.size() - 1), bubble(log) + overlapHidden(log), dispatch, trace);
    }

    /** The overlapped communication and the share of it hidden that pretrain-gpt prints under overlap, or "". */
    private static String overlapHidden(String log) {
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("overlapped communication on rank 0: ([0-9.]+) ms, "
                + "the step waited ([0-9.]+) ms for it \\(([0-9]+)% hidden\\)").matcher(log);
        return m.find() ? String.format(Locale.ROOT, "  overlapped comm %s ms, %s%% hidden", m.group(1), m.group(3)) : "";
    }

    /** The measured and theoretical bubble pretrain-gpt prints under pipelining, or "". */
    private static String bubble(String log) {
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("pipeline bubble on rank 0: ([0-9.]+) of compute "
                + "time idle \\(Megatron's theory \\(p-1\\)/\\(v\\*m\\): ([0-9.]+)\\); replayed on one device per "
                + "stage from the measured pass times: ([0-9.]+)").matcher(log);
        return m.find() ? String.format(Locale.ROOT, "  bubble %s, replayed %s (theory %s)", m.group(1), m.group(3),
                m.group(2)) : "";
    }

    /** Rank 0's time in the expert exchange over the timed iterations (all but the first), from --metrics-out. */
    private static double dispatchSeconds(java.nio.file.Path metrics) {
        try {
            List<String> lines = java.nio.file.Files.readAllLines(metrics);
            double ms = 0;
            for (String line : lines.subList(1, lines.size())) {
                ms += com.google.gson.JsonParser.parseString(line).getAsJsonObject().get("moe_dispatch_ms").getAsDouble();
            }
            java.nio.file.Files.deleteIfExists(metrics);
            return ms / 1e3;
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    /** The "activations held for backward" figure pretrain-gpt prints, in bytes. */
    private static long heldBytes(String log) {
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("held for backward at the end of a micro-batch's "
                + "forward: ([0-9.]+) MB").matcher(log);
        return m.find() ? Math.round(Double.parseDouble(m.group(1)) * 1048576) : -1;
    }

    /** The "optimizer state on rank 0" figure pretrain-gpt prints. */
    /** Rank 0's measured optimizer bytes after the first step (before it, AdamW's moments do not exist yet). */
    private static long optimizerBytes(String log) {
        return org.djlmegatron.pretrain.RankMemoryLine.parse(log).optimizerBytes();
    }
}
