package org.djlmegatron.pretrain;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.jni.JniUtils;
import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.djlmegatron.bridge.convert.CheckpointLoader;
import org.djlmegatron.bridge.hf.HfCheckpoint;
import org.djlmegatron.bridge.hf.HfDropout;
import org.djlmegatron.checkpoint.TrainingCheckpoint;
import org.djlmegatron.launch.DistributedWorld;
import org.djlmegatron.training.buffers.Overlap;
import org.djlmegatron.comm.LaunchConfig;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.RankDevices;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.context.ContextParallel;
import org.djlmegatron.context.CpCommType;
import org.djlmegatron.data.TextTokenizer;
import org.djlmegatron.data.batches.BatchSource;
import org.djlmegatron.data.batches.MockData;
import org.djlmegatron.data.batches.ReplayBatches;
import org.djlmegatron.data.batches.RowsSource;
import org.djlmegatron.engine.ThreadBudget;
import org.djlmegatron.engine.TorchNative;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.models.ModelFlops;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.profile.ProfileSummary;
import org.djlmegatron.profile.StepProfiler;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.pipeline.ForwardOnly;
import org.djlmegatron.pipeline.ModelChunks;
import org.djlmegatron.pipeline.PipelineLayout;
import org.djlmegatron.pipeline.PipelineSchedule;
import org.djlmegatron.training.DistributedStep;
import org.djlmegatron.training.model.MicroBatch;
import org.djlmegatron.training.model.PipelineStageModel;
import org.djlmegatron.training.StepConfig;
import org.djlmegatron.training.StepResult;
import org.djlmegatron.transformer.AttentionBackend;
import org.djlmegatron.context.DocumentMasking;
import org.djlmegatron.transformer.Recompute;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Megatron's {@code pretrain_gpt.py} on thread ranks: builds the grid and the model (from scratch
 * or from a Hugging Face checkpoint), then runs the trainer over the data, logging on rank 0.
 */
public final class PretrainGpt {

    private final PretrainOptions o;
    private DocumentMasking documentMasking; // --reset-position-ids, --reset-attention-mask, --eod-mask-loss; null: off
    private final PrintStream out;
    private Overlap overlap = Overlap.OFF; // --overlap-grad-reduce, --overlap-param-gather

    public PretrainGpt(PretrainOptions options, PrintStream out) {
        this.o = options;
        this.out = out;
    }

    /**
     * Trains and returns the per-iteration results (identical on every rank). Several JVMs join
     * one world through the torchrun/Slurm environment (MASTER_ADDR, MASTER_PORT, NNODES,
     * NODE_RANK, ...), each running --nproc-per-node thread ranks.
     */
    public List<StepResult> run() {
        PretrainValidation.validate(o);
        var recompute = o.activations.recompute();
        HfDropout hfDropout = o.initHf == null ? null : HfDropout.read(o.initHf);
        double[] dropout = o.activations.dropout(hfDropout == null ? null
                : new double[] {hfDropout.hidden(), hfDropout.attention()});
        var scaler = o.scaler(); // option errors fail here, before any thread starts
        var schedule = o.schedule();
        var optimizer = o.optimizerFactory();
        var attention = o.attentionBackend();
        LaunchConfig launch = LaunchConfig.fromEnvironment(o.nprocPerNode);
        RankDevices devices = RankDevices.parse(o.device, o.nprocPerNode);
        var moe = o.moe.config();
        RankGrid grid = RankGrid.create(launch.worldSize(), o.tensorModelParallelSize, o.pipelineModelParallelSize,
                o.contextParallelSize, o.moe.expertModelParallelSize);
        o.profiling.validate(launch.worldSize(), launch.nprocPerNode());
        if (o.moe.moeRouterEnableExpertBias && !moe.scoreFunction().equals(org.djlmegatron.moe.MoeConfig.ScoreFunction.SIGMOID)) {
            throw new IllegalArgumentException("--moe-router-enable-expert-bias needs --moe-router-score-function sigmoid"
                    + " (Megatron's rule), got " + o.moe.moeRouterScoreFunction);
        }
        CpCommType cpComm = CpCommType.parse(o.cpCommType);
        if (o.initHf != null && o.load != null) {
            throw new IllegalArgumentException("give --init-hf or --load, not both");
        }
        Start start = Start.of(o);
        try (HfCheckpoint hf = o.initHf == null ? null : HfCheckpoint.open(o.initHf)) {
            if (hf == null && start.config() == null && o.tokenizerType != null) {
                o.vocabSize = paddedVocab(grid.tp());
            }
            TransformerConfig cfg = hf != null ? hf.config() : start.config() != null ? start.config() : o.modelConfig();
            o.moe.checkLayout(grid.tp(), o.sequenceParallel, cfg.numExperts());
            o.moe.checkSharedExpertOverlap(cfg.hasSharedExperts());
            grid.validateModel(cfg.numAttentionHeads(), cfg.numQueryGroups(), cfg.vocabSize(), cfg.numExperts());
            PipelineLayout stages = o.pipelineLayout(cfg.numLayers());
            BatchSource data = dataSource(cfg, o.globalBatchSize != null ? o.globalBatchSize
                    : o.microBatchSize * grid.dp());
            int seq = data.seqLength();
            int gbs = o.globalBatchSize != null ? o.globalBatchSize : o.microBatchSize * grid.dp();
            StepConfig tc = new StepConfig(o.microBatchSize, gbs, optimizer, schedule, o.clipGrad,
                    o.useDistributedOptimizer,
                    o.ddpBucketSize != null ? o.ddpBucketSize : StepConfig.DEFAULT_BUCKET_ELEMENTS, scaler, o.sharding());
            tc.microBatchesPerStep(grid.dp());
            if (stages.chunks() > 1) { // Megatron's refusals of the interleaved schedule, before any rank starts
                PipelineSchedule.of(grid.pp(), 0, stages.chunks(), tc.microBatchesPerStep(grid.dp()),
                        microbatchGroupSize(grid), false);
            } else if (o.microbatchGroupSizePerVirtualPipelineStage != null) {
                throw new IllegalArgumentException("--microbatch-group-size-per-virtual-pipeline-stage "
                        + o.microbatchGroupSizePerVirtualPipelineStage + " needs --virtual-pipeline-model-parallel-size "
                        + "(it groups micro-batches of the interleaved schedule)");
            }
            if (start.resume() != null && !o.finetune) {
                TrainingCheckpoint.checkResumable(start.iterDir(), start.resume(), gbs);
                if (!o.noLoadOptim) {
                    TrainingCheckpoint.checkPipelineResumable(start.iterDir(), start.resume(), grid.tp(), grid.pp(),
                            grid.dp(), o.useDistributedOptimizer);
                }
            }
            checkSequence(cfg, seq, grid);
            out.printf(Locale.ROOT, "> building GPT model: %s%n> %s, micro batch %d, global batch %d, seq %d%s%n",
                    describe(cfg), grid, o.microBatchSize, gbs, seq, ", " + precision() + ", attention " + attention.name().toLowerCase(Locale.ROOT));
            out.printf(Locale.ROOT, "> dropout: hidden %s, attention %s; activation recomputation: %s%n",
                    dropout[0], dropout[1], recompute);
            if (grid.cp() > 1 && attention == AttentionBackend.FUSED) {
                out.printf(Locale.ROOT, "> context parallelism: attention takes the composed path (ring attention needs "
                        + "each block's log-sum-exp, which the native library's fused kernel does not return)%n");
            }
            documentMasking = o.documents.masking(o.tokenizerType, o.tokenizerModel, o.vocabFile, o.mergeFile);
            if (documentMasking != null) {
                out.printf(Locale.ROOT, "> document masking: %s (EOD id %d)%s%n", o.documents.flags(), documentMasking.eod(),
                        o.documents.resetAttentionMask && attention == AttentionBackend.FUSED
                                ? "; attention takes the composed path (the fused kernel is causal only)" : "");
            }
            double flops = ModelFlops.training(cfg, gbs, seq);
            if (start.resume() != null) {
                TrainingCheckpoint.TrainerState r = start.resume();
                out.printf(Locale.ROOT, "> %s %s (iteration %d, saved at TP %d x DP %d%s)%n",
                        o.finetune ? "fine-tuning from the weights of" : "resuming from", start.iterDir(), r.iteration(),
                        TrainingCheckpoint.savedTensorParallel(start.iterDir()), r.dpSize(),
                        r.distributedOptimizer() ? " with the distributed optimizer" : "");
            } else if (start.weights() != null) {
                out.printf(Locale.ROOT, "> loading weights from %s%n", start.weights().describe());
            } else if (o.load != null) {
                out.printf(Locale.ROOT, "> no checkpoint in %s (--load = --save): starting from scratch%n", o.load);
            }
            overlap = o.overlap(launch.timeout());
            overlap.requireBuffers();
            int threads = ThreadBudget.applyFor(o.intraOpThreads, launch.nprocPerNode());
            out.printf(Locale.ROOT, "> intra-op threads per rank: %d (%d cores, %d ranks here)%n", threads,
                    Runtime.getRuntime().availableProcessors(), launch.nprocPerNode());
            try (AutoCloseable closeData = data instanceof AutoCloseable c ? c : () -> { }) {
                List<List<StepResult>> local = DistributedWorld.run(grid, launch, devices,
                        ctx -> train(ctx, cfg, stages, hf, start, data, tc, gbs, flops, attention, recompute, dropout,
                                cpComm, moe));
                return local.get(0); // this JVM's first rank (global rank 0 on node 0)
            } catch (RuntimeException e) {
                throw e;
            } catch (Exception e) {
                throw new IllegalStateException(e);
            } finally {
                start.close();
            }
        }
    }

    /** Names the trace a profiled rank wrote and prints the operators that took the most time. */
    private void reportProfile(java.nio.file.Path trace, int rank) {
        if (trace == null) {
            return;
        }
        String table;
        try {
            table = ProfileSummary.read(trace).table(15);
        } catch (java.io.IOException e) {
            table = "(the trace cannot be summarised: " + e.getMessage() + ")\n";
        }
        synchronized (out) {
            out.printf(Locale.ROOT, "> profile of rank %d, iterations %d-%d: %s (chrome://tracing or Perfetto); self time "
                    + "by operator:%n%s", rank, o.profiling.profileStepStart, o.profiling.profileStepEnd - 1, trace, table);
        }
    }

    private List<StepResult> train(RankContext ctx, TransformerConfig cfg, PipelineLayout stages, HfCheckpoint hf,
            Start start, BatchSource data, StepConfig tc, int gbs, double flops, AttentionBackend attention,
            Recompute recompute, double[] dropout, CpCommType cpComm, org.djlmegatron.moe.MoeConfig moe) {
        int stage = ctx.grid().ppRank(ctx.rank());
        List<GPTModel> chunks = new ArrayList<>(); // interleaving: chunk c is virtual stage c p + stage
        for (int c = 0; c < stages.chunks(); c++) {
            chunks.add(stageModel(ctx, cfg, stages.firstLayer(stage, c), stages.endLayer(stage, c), hf, start,
                    attention, recompute, dropout, cpComm, moe));
        }
        // per-layer gradient-final reports; ZeRO-3 gathers and frees a layer around each backward segment
        chunks.forEach(c -> c.setLayerSegments(o.overlapGradReduce || o.sharding().shardsParameters()));
        GPTModel model = chunks.get(0);
        PipelineStageModel stageModel = chunks.size() == 1 ? model : new ModelChunks(chunks);
        ProcessGroup dp = ctx.group(GroupKind.DATA_CONTEXT);
        ProcessGroup samples = ctx.group(GroupKind.DATA); // context-parallel peers read the same samples
        List<StepResult> results = new ArrayList<>();
        boolean logger = ctx.rank() == 0;
        try (DistributedStep trainer = new DistributedStep(ctx, stageModel, tc, overlap);
                TrainingLog log = logger ? new TrainingLog(out, o.trainIters, o.logInterval, flops, o.metricsOut) : null) {
            trainer.setMicrobatchGroupSize(microbatchGroupSize(ctx.grid()));
            if (logger) {
                log.message(String.format(Locale.ROOT, "> number of parameters: %,d; optimizer state on rank 0: %,d bytes",
                        chunks.stream().mapToLong(PretrainGpt::parameterCount).sum(), trainer.optimizerBytes()));
            }
            long t0 = System.nanoTime();
            long first = resume(ctx, chunks, stages, trainer, start);
            if (logger && first > 0 && !o.noLoadOptim) {
                log.message(String.format(Locale.ROOT, "> optimizer state restored in %.2f s", (System.nanoTime() - t0) / 1e9));
            }
            trainer.measureHeldBytes();
            StepProfiler profiler = o.profiling.forRank(ctx.rank());
            try {
                for (long it = first; it < o.trainIters; it++) {
                    List<MicroBatch> batches = data.microBatches(it, samples.rank(), samples.size(), o.microBatchSize, gbs);
                    if (profiler != null) {
                        profiler.beforeIteration(it);
                    }
                    StepResult r = trainer.step(batches);
                    if (profiler != null) {
                        reportProfile(profiler.afterIteration(it, it + 1 == o.trainIters), ctx.rank());
                    }
                    results.add(r);
                    if (it == first) {
                        trainer.resetPipelineTimes(); // the bubble is measured without the warm-up iteration
                    }
                    if (cfg.isMoe()) {
                        MoeBalance balance = MoeBalance.collect(moeStats(chunks), dp, ctx.manager());
                        if (o.moe.moeRouterEnableExpertBias) { // every rank has the same global counts
                            for (int l = 0; l < balance.tokensPerExpert().length; l++) {
                                moeLayers(chunks).get(l).router().updateExpertBias(balance.tokensPerExpert()[l],
                                        o.moe.moeRouterBiasUpdateRate);
                            }
                        }
                        if (logger) {
                            log.moe(balance);
                        }
                    }
                    if (logger && it == first) {
                        log.message(String.format(Locale.ROOT, "> activations held for backward at the end of a "
                                + "micro-batch's forward: %.2f MB on rank 0%s (recomputation: %s)",
                                trainer.heldBytes() / 1048576.0, ctx.grid().pp() > 1
                                        ? ", the peak over the micro-batches in flight" : "", recompute));
                        log.message(RankMemoryLine.format(trainer.memory(), o.sharding()));
                    }
                    if (logger) {
                        log.step(r, (it + 1) * gbs, gbs);
                        if (it + 1 == Math.min(o.logInterval, o.trainIters)) {
                            logDeviceMemory(ctx, log, it + 1);
                        }
                    }
                    if (o.save != null && (it + 1 == o.trainIters
                            || (o.saveInterval != null && (it + 1) % o.saveInterval == 0))) {
                        trainer.awaitParamGather(); // --overlap-param-gather: the weights saved hold the last update
                        TrainingCheckpoint.save(o.save, ctx, chunks, stages, trainer, trainerState(trainer, gbs, dp.size()));
                        if (logger) {
                            log.message(String.format(Locale.ROOT, "> saved checkpoint at iteration %d to %s", it + 1, o.save));
                        }
                    }
                    if (o.evalInterval > 0 && (it + 1) % o.evalInterval == 0) {
                        trainer.awaitParamGather(); // the evaluation's collectives on dp come after the gather's
                        double loss = evaluate(ctx, stageModel, data, samples, dp, gbs);
                        moeStats(chunks).forEach(org.djlmegatron.moe.MoeStats::reset); // balance figures are training's
                        if (logger) {
                            log.eval(it + 1, loss);
                        }
                    }
                }
            } finally {
                if (profiler != null) {
                    profiler.abandon(); // a failed iteration inside the window
                }
            }
            trainer.gatherWeights(); // ZeRO-3: whole weights for whoever reads the model after the run
            double[] overlapped = trainer.overlapSeconds();
            if (logger && overlapped != null && overlapped[0] > 0) {
                log.message(String.format(Locale.ROOT, "> overlapped communication on rank 0: %.1f ms, the step waited "
                        + "%.1f ms for it (%.0f%% hidden)", overlapped[0] * 1e3, overlapped[1] * 1e3,
                        100 * Math.max(0, 1 - overlapped[1] / overlapped[0])));
            }
            if (logger && ctx.grid().pp() > 1 && o.trainIters - first > 1) {
                log.message(String.format(Locale.ROOT, "> pipeline bubble on rank 0: %.3f of compute time idle "
                        + "(Megatron's theory (p-1)/(v*m): %.3f); replayed on one device per stage from the measured "
                        + "pass times: %.3f", trainer.pipelineBubble(),
                        (ctx.grid().pp() - 1) / (double) (chunks.size() * trainer.microBatchesPerStep()),
                        trainer.replayedPipelineBubble()));
            }
        }
        return results;
    }

    /** The MoE layers of every model chunk of this rank, chunk by chunk. */
    private static List<org.djlmegatron.moe.MoeLayer> moeLayers(List<GPTModel> chunks) {
        return chunks.stream().flatMap(c -> c.moeLayers().stream()).toList();
    }

    /** Their balance figures, in the same order. */
    private static List<org.djlmegatron.moe.MoeStats> moeStats(List<GPTModel> chunks) {
        return chunks.stream().flatMap(c -> c.moeStats().stream()).toList();
    }

    /** {@code --microbatch-group-size-per-virtual-pipeline-stage}, or Megatron's default: the pipeline size. */
    private int microbatchGroupSize(RankGrid grid) {
        Integer g = o.microbatchGroupSizePerVirtualPipelineStage;
        return g != null ? g : grid.pp();
    }

    /** This rank's model for global layers {@code [firstLayer, endLayer)}, set up and initialised or loaded. */
    private GPTModel stageModel(RankContext ctx, TransformerConfig cfg, int firstLayer, int endLayer, HfCheckpoint hf,
            Start start, AttentionBackend attention, Recompute recompute, double[] dropout, CpCommType cpComm,
            org.djlmegatron.moe.MoeConfig moe) {
        GPTModel model = new GPTModel(ctx, cfg, o.sequenceParallel, firstLayer, endLayer);
        model.setMoe(moe);
        if (o.moe.moeRouterEnableExpertBias) {
            model.moeLayers().forEach(l -> l.router().enableExpertBias());
        }
        if (ctx.grid().cp() > 1) {
            model.setContextParallel(new ContextParallel(ctx.group(GroupKind.CONTEXT), cpComm));
        }
        model.setParameterType(o.parameterType());
        model.setAttentionBackend(attention);
        model.setRecompute(recompute);
        model.setDropout(dropout[0], dropout[1], o.seed);
        model.setDocumentMasking(documentMasking);
        seedDevice(ctx);
        if (hf != null) {
            hf.loadInto(model, o.readChecks());
        } else if (start.weights() != null) {
            CheckpointLoader.loadInto(start.weights(), model, o.readChecks());
        } else {
            model.initializeRandom(o.seed, o.initMethodStd);
        }
        return model;
    }

    /**
     * Megatron's load: the iteration (and so the data position) unless {@code --finetune}; the
     * optimizer state, schedule and loss scale unless {@code --finetune} or {@code --no-load-optim},
     * resharded when the layout changed. Returns the first iteration to run.
     */
    private long resume(RankContext ctx, List<GPTModel> chunks, PipelineLayout stages, DistributedStep trainer,
            Start start) {
        if (start.resume() != null) { // model state beside the weights, loaded with them
            TrainingCheckpoint.restoreRouterBiases(start.iterDir(), chunks, o.readChecks());
        }
        if (start.resume() == null || o.finetune) {
            return 0;
        }
        if (o.noLoadOptim) {
            trainer.restoreCounters(start.resume().iteration(), 0);
        } else {
            TrainingCheckpoint.restore(start.iterDir(), ctx, chunks, stages, trainer, start.resume(),
                    o.useDistributedOptimizer, o.readChecks());
        }
        return start.resume().iteration();
    }

    /**
     * Seeds libtorch's generator of this rank's device as Megatron seeds its default stream
     * ({@code seed + 100 x pp rank}: every rank of a TP group draws alike). Our dropout does not draw
     * from it (its masks are functions of the seed and the sample, {@code PositionalDropout}); it
     * seeds whatever else libtorch draws. Only with the native library, which has per-device seeding.
     */
    private void seedDevice(RankContext ctx) {
        if (TorchNative.isAvailable()) {
            Device d = ctx.manager().getDevice();
            TorchNative.manualSeed(d.isGpu() ? d.getDeviceId() : -1, o.seed + 100L * ctx.grid().ppRank(ctx.rank()));
        }
    }

    /** Megatron's one memory line after the first logged iteration, on CUDA (the native library's allocator stats). */
    private static void logDeviceMemory(RankContext ctx, TrainingLog log, long iteration) {
        Device d = ctx.manager().getDevice();
        if (!d.isGpu() || !TorchNative.isAvailable()) {
            return;
        }
        long[] m = TorchNative.cudaMemoryStats(d.getDeviceId());
        log.message(String.format(Locale.ROOT, "[Rank %d] (after %d iterations) memory (MB) | allocated: %.1f | "
                + "max allocated: %.1f | reserved: %.1f | max reserved: %.1f", ctx.rank(), iteration, m[0] / 1048576.0,
                m[2] / 1048576.0, m[1] / 1048576.0, m[3] / 1048576.0));
    }

    private String precision() {
        return o.fp16 ? "fp16" : o.bf16 ? "bf16" : "fp32";
    }

    private TrainingCheckpoint.TrainerState trainerState(DistributedStep trainer, int gbs, int dpSize) {
        return new TrainingCheckpoint.TrainerState(trainer.iteration(), trainer.updates(), trainer.iteration() * gbs,
                gbs, dpSize, o.useDistributedOptimizer, trainer.layout().paddedSize(), trainer.scaler().state(),
                o.seed, String.join(" ", o.commandLine()));
    }

    /** Mean loss over {@code --eval-iters} held-out global batches (grad mode off). */
    private double evaluate(RankContext ctx, PipelineStageModel model, BatchSource data, ProcessGroup samples,
            ProcessGroup dp, int gbs) {
        ProcessGroup pp = ctx.group(GroupKind.PIPELINE);
        if (!(data instanceof MockData) && !(data instanceof IndexedData)) {
            return Double.NaN;
        }
        boolean gradMode = JniUtils.isGradMode();
        JniUtils.setGradMode(false);
        try (NDManager s = ctx.manager().newSubManager()) {
            double sum = 0;
            int count = 0;
            long heldOut = 1L << 40; // iterations far beyond training: samples never trained on
            for (int i = 0; i < o.evalIters; i++) {
                List<MicroBatch> batches = data instanceof IndexedData indexed
                        ? indexed.validBatches(i, samples.rank(), samples.size(), o.microBatchSize, gbs)
                        : data.microBatches(heldOut + i, samples.rank(), samples.size(), o.microBatchSize, gbs);
                if (pp.size() > 1) { // Megatron's forward-only schedule
                    sum += ForwardOnly.lossSum(pp, model, batches, s, microbatchGroupSize(ctx.grid()));
                    count += batches.size();
                    continue;
                }
                for (MicroBatch mb : batches) {
                    NDArray x = s.create(mb.inputs(), new Shape(mb.rows(), mb.seq()));
                    NDArray y = s.create(mb.labels(), new Shape(mb.rows(), mb.seq()));
                    sum += model.loss(x, y).getFloat();
                    count++;
                }
            }
            NDArray mean = s.create(new float[] {(float) (sum / count)});
            return dp.size() > 1 ? dp.allReduce(mean, ReduceOp.AVG).getFloat(0) : mean.getFloat(0);
        } finally {
            JniUtils.setGradMode(gradMode);
        }
    }

    private BatchSource dataSource(TransformerConfig cfg, int gbs) {
        RowsSource source;
        if (o.dataPath != null) {
            source = new IndexedData(o, gbs);
            source.limitTokens(cfg.vocabSize(), "--data-path " + String.join(" ", o.dataPath));
            return source;
        }
        if (o.replayBatches != null) {
            source = new ReplayBatches(o.replayBatches, o.replayKey);
            source.limitTokens(cfg.vocabSize(), "--replay-batches " + o.replayBatches);
            return source;
        }
        if (o.mockData) {
            return new MockData(o.seqLength, cfg.vocabSize(), o.seed);
        }
        throw new IllegalArgumentException("no training data: give --data-path, --mock-data or --replay-batches FILE");
    }

    private void checkSequence(TransformerConfig cfg, int seq, RankGrid grid) {
        if (cfg.positionEmbedding() == TransformerConfig.PositionEmbedding.LEARNED_ABSOLUTE
                && seq > cfg.maxPositionEmbeddings()) {
            throw new IllegalArgumentException("sequence length " + seq + " exceeds max-position-embeddings "
                    + cfg.maxPositionEmbeddings());
        }
        if (grid.cp() > 1 && seq % (2 * grid.cp()) != 0) {
            throw new IllegalArgumentException("--context-parallel-size " + grid.cp() + " needs the sequence length ("
                    + seq + ") divisible by 2 x " + grid.cp() + " (causal load balancing: 2N chunks)");
        }
        if (o.sequenceParallel && (seq / grid.cp()) % grid.tp() != 0) {
            throw new IllegalArgumentException("--sequence-parallel needs the sequence length per context-parallel rank (" + seq / grid.cp()
                    + ") divisible by the tensor-parallel size " + grid.tp());
        }
    }

    /** The tokenizer's vocabulary padded as Megatron pads it (a multiple of divisible-by x TP). */
    private int paddedVocab(int tp) {
        try (TextTokenizer t = TextTokenizer.create(o.tokenizerType, o.tokenizerModel, o.vocabFile, o.mergeFile)) {
            int multiple = o.makeVocabSizeDivisibleBy * tp;
            return (t.vocabSize() + multiple - 1) / multiple * multiple;
        } catch (Exception e) {
            throw e instanceof RuntimeException r ? r : new IllegalStateException(e);
        }
    }

    private static long parameterCount(GPTModel model) {
        long n = 0;
        int ep = model.rankContext().group(GroupKind.EXPERT).size(); // each EP rank holds 1/EP of the experts
        for (ShardedParameter p : model.parameters()) {
            n += p.fullShape().size() * (p.name().contains(".mlp.experts.local_experts.") ? ep : 1);
        }
        return n;
    }

    private static String describe(TransformerConfig c) {
        return String.format(Locale.ROOT, "%d layers, hidden %d, %d heads (%d kv), ffn %d, vocab %d%s",
                c.numLayers(), c.hiddenSize(), c.numAttentionHeads(), c.numQueryGroups(), c.ffnHiddenSize(),
                c.vocabSize(), c.isMoe() ? ", " + c.numExperts() + " experts top-" + c.moeRouterTopK() : "");
    }
}
