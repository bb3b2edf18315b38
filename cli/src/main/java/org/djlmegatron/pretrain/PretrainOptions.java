package org.djlmegatron.pretrain;

import org.djlmegatron.options.InvalidOptionException;
import org.djlmegatron.training.buffers.ShardingStrategy;
import ai.djl.ndarray.types.DataType;
import java.nio.file.Path;
import java.util.Locale;
import org.djlmegatron.engine.TorchNative;
import org.djlmegatron.nn.Norm;
import org.djlmegatron.optim.FlatAdamW;
import org.djlmegatron.optim.FlatOptimizer;
import org.djlmegatron.optim.FlatSgd;
import org.djlmegatron.optim.LearningRateSchedule;
import org.djlmegatron.training.LossScaler;
import org.djlmegatron.transformer.AttentionBackend;
import org.djlmegatron.transformer.RopeScaling;
import org.djlmegatron.transformer.TransformerConfig;
import picocli.CommandLine.Help.Visibility;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code pretrain-gpt}'s options, named and defaulted as Megatron-LM's. */
public final class PretrainOptions {

    // model shape
    @Option(names = "--num-layers", defaultValue = "2") public int numLayers;
    @Option(names = "--hidden-size", defaultValue = "128") public int hiddenSize;
    @Option(names = "--num-attention-heads", defaultValue = "4") public int numAttentionHeads;
    @Option(names = "--num-query-groups", description = "key/value heads (GQA); default: MHA") public Integer numQueryGroups;
    @Option(names = "--group-query-attention", description = "accepted for Megatron compatibility") public boolean groupQueryAttention;
    @Option(names = "--kv-channels") public Integer kvChannels;
    @Option(names = "--ffn-hidden-size") public Integer ffnHiddenSize;
    @Option(names = "--seq-length", defaultValue = "128") public int seqLength;
    @Option(names = "--max-position-embeddings") public Integer maxPositionEmbeddings;
    @Option(names = "--swiglu") public boolean swiglu;
    @Option(names = "--normalization", defaultValue = "LayerNorm", description = "LayerNorm or RMSNorm") public String normalization;
    @Option(names = "--norm-epsilon", defaultValue = "1e-5") public double normEpsilon;
    @Option(names = "--position-embedding-type", defaultValue = "learned_absolute", description = "learned_absolute or rope") public String positionEmbeddingType;
    @Option(names = "--rotary-base", defaultValue = "10000") public double rotaryBase;
    @Option(names = "--use-rope-scaling", description = "Llama 3.1's rope scaling (low 1, high 4, original 8192, as Megatron-LM)") public boolean useRopeScaling;
    @Option(names = "--rope-scaling-factor", defaultValue = "8.0", description = "factor of --use-rope-scaling (default: ${DEFAULT-VALUE})") public double ropeScalingFactor;
    @Option(names = "--rotary-seq-len-interpolation-factor", description = "linear rope scaling: positions divided by this integer (default: none)") public Integer rotarySeqLenInterpolationFactor;
    @Option(names = "--untie-embeddings-and-output-weights") public boolean untieEmbeddings;
    @Option(names = "--disable-bias-linear") public boolean disableBiasLinear;
    @Option(names = "--add-qkv-bias") public boolean addQkvBias;
    @Option(names = "--qk-layernorm") public boolean qkLayernorm;
    @Option(names = "--num-experts", defaultValue = "0") public int numExperts;
    @Option(names = "--moe-router-topk", defaultValue = "2") public int moeRouterTopk;
    @Option(names = "--moe-ffn-hidden-size") public Integer moeFfnHiddenSize;
    @Option(names = "--moe-shared-expert-intermediate-size", description = "width of the shared experts every token also goes through (default: none)") public Integer moeSharedExpertIntermediateSize;
    @Option(names = "--moe-shared-expert-gate", description = "scale the shared experts' output by a per-token sigmoid gate, as Qwen2-MoE (default: off)") public boolean moeSharedExpertGate;
    @Option(names = "--vocab-size", defaultValue = "512", description = "vocabulary (mock data)") public int vocabSize;
    @Option(names = "--init-method-std", defaultValue = "0.02") public float initMethodStd;

    @Mixin public ActivationOptions activations = new ActivationOptions();
    @Mixin public MoeOptions moe = new MoeOptions();
    @Mixin public DocumentMaskingOptions documents = new DocumentMaskingOptions();
    @Mixin public ProfileOptions profiling = new ProfileOptions();

    // batch and iterations
    @Option(names = "--micro-batch-size", defaultValue = "4") public int microBatchSize;
    @Option(names = "--global-batch-size") public Integer globalBatchSize;
    @Option(names = "--train-iters", required = true, showDefaultValue = Visibility.NEVER) public long trainIters;

    // optimizer and schedule
    @Option(names = "--optimizer", defaultValue = "adam", description = "adam or sgd") public String optimizer;
    @Option(names = "--lr", required = true, showDefaultValue = Visibility.NEVER) public double lr;
    @Option(names = "--min-lr", defaultValue = "0") public double minLr;
    @Option(names = "--adam-beta1", defaultValue = "0.9") public double adamBeta1;
    @Option(names = "--adam-beta2", defaultValue = "0.999") public double adamBeta2;
    @Option(names = "--adam-eps", defaultValue = "1e-8") public double adamEps;
    @Option(names = "--sgd-momentum", defaultValue = "0.9") public double sgdMomentum;
    @Option(names = "--weight-decay", defaultValue = "0.01") public double weightDecay;
    @Option(names = "--clip-grad", defaultValue = "1.0") public double clipGrad;
    @Option(names = "--lr-decay-style", defaultValue = "linear", description = "constant, linear, cosine, inverse-square-root or WSD") public String lrDecayStyle;
    @Option(names = "--lr-decay-iters") public Long lrDecayIters;
    @Option(names = "--lr-warmup-iters", defaultValue = "0") public long lrWarmupIters;
    @Option(names = "--lr-warmup-fraction") public Double lrWarmupFraction;
    @Option(names = "--lr-wsd-decay-iters") public Long lrWsdDecayIters;
    @Option(names = "--lr-wsd-decay-style", defaultValue = "exponential") public String lrWsdDecayStyle;

    // precision
    @Option(names = "--fp16") public boolean fp16;
    @Option(names = "--bf16", description = "bf16 weights and arithmetic, fp32 masters (needs the native library)") public boolean bf16;
    @Option(names = "--attention-backend", defaultValue = "auto", description = "auto, fused (libtorch SDPA, native library) or unfused") public String attentionBackend;
    @Option(names = "--device", defaultValue = "auto", description = "auto, cpu or cuda (local rank i on GPU i; auto: cuda when every rank has a GPU)") public String device;
    @Option(names = "--loss-scale", description = "static loss scale (fp16); default: dynamic") public Double lossScale;
    @Option(names = "--initial-loss-scale", defaultValue = "4294967296") public double initialLossScale;
    @Option(names = "--min-loss-scale", defaultValue = "1.0") public double minLossScale;
    @Option(names = "--loss-scale-window", defaultValue = "1000") public int lossScaleWindow;
    @Option(names = "--hysteresis", defaultValue = "2") public int hysteresis;

    // parallelism
    @Option(names = "--tensor-model-parallel-size", defaultValue = "1") public int tensorModelParallelSize;
    @Option(names = "--sequence-parallel") public boolean sequenceParallel;
    @Option(names = "--context-parallel-size", defaultValue = "1",
            description = "ranks that split each sequence (2N chunks, rank r holds r and 2N-1-r; default: ${DEFAULT-VALUE})") public int contextParallelSize;
    @Option(names = "--cp-comm-type", defaultValue = "p2p",
            description = "context-parallel attention: p2p (ring), all_gather or a2a (Ulysses) (default: ${DEFAULT-VALUE})") public String cpCommType;
    @Option(names = "--pipeline-model-parallel-size", defaultValue = "1", description = "pipeline stages, run with the 1F1B schedule (default: ${DEFAULT-VALUE})") public int pipelineModelParallelSize;
    @Option(names = "--virtual-pipeline-model-parallel-size", description = "model chunks per pipeline rank, run with the interleaved 1F1B schedule; chunk c of rank r holds the layers of virtual stage c*P+r (default: none, no interleaving)") public Integer virtualPipelineModelParallelSize;
    @Option(names = "--num-layers-per-virtual-pipeline-stage", description = "layers per model chunk: the other way to give the virtual pipeline size (default: none)") public Integer numLayersPerVirtualPipelineStage;
    @Option(names = "--microbatch-group-size-per-virtual-pipeline-stage", description = "interleaved schedule: micro-batches "
            + "that go through each model chunk before the next chunk's turn, between the pipeline size and the micro-batches "
            + "per step (default: the pipeline size)") public Integer microbatchGroupSizePerVirtualPipelineStage;
    @Option(names = "--decoder-first-pipeline-num-layers", description = "layers on the first pipeline stage (default: an even split)") public Integer decoderFirstPipelineNumLayers;
    @Option(names = "--decoder-last-pipeline-num-layers", description = "layers on the last pipeline stage (default: an even split)") public Integer decoderLastPipelineNumLayers;
    @Option(names = "--use-distributed-optimizer", description = "shard fp32 masters and optimizer state over data parallelism (ZeRO-1): --data-parallel-sharding-strategy optim") public boolean useDistributedOptimizer;
    @Option(names = "--data-parallel-sharding-strategy", description = "what each data-parallel rank keeps: no_shard (ZeRO-0), optim (ZeRO-1, the distributed optimizer), optim_grads (ZeRO-2: also only its fp32 gradient shard between micro-batches; native library; untied embeddings under pipelining; with --overlap-grad-reduce each micro-batch's buckets are reduced to their owners during its backward: no PP/EP), optim_grads_params (ZeRO-3: also only its 1/DP shard of each layer's weights, all-gathered before the layer's forward and its backward and freed after; native library, no pipeline parallelism; under expert parallelism the expert weights sharded over the expert-data group; with --overlap-grad-reduce each layer's reduce-scatter starts during backward, with --overlap-param-gather the next layer's all-gather during the current one's compute; its checkpoints are optim's) (default: optim with --use-distributed-optimizer, else no_shard)") public String dataParallelShardingStrategy;
    @Option(names = "--nproc-per-node", defaultValue = "1", description = "ranks (threads) in this JVM") public int nprocPerNode;
    @Option(names = "--intra-op-threads", description = "libtorch threads per rank (default: OMP_NUM_THREADS, else cores / --nproc-per-node, at least 1)") public Integer intraOpThreads;
    @Option(names = "--ddp-bucket-size", description = "elements per gradient all-reduce bucket (default: 40000000, Megatron's)") public Long ddpBucketSize;
    @Option(names = "--overlap-grad-reduce", description = "start each gradient bucket's data-parallel reduction (an all-reduce; under a sharded optimizer a reduce of each rank's piece to that rank) as soon as backward has finished it: in the last micro-batch (under pipelining each model chunk's last; under optim_grads every micro-batch; under optim_grads_params each layer's reduce-scatter in every micro-batch), on a communication thread with a communicator of its own (contiguous buffers: native library; fp32 weights under expert parallelism; optim_grads not under pipelining or expert parallelism) (default: off)") public boolean overlapGradReduce;
    @Option(names = "--overlap-param-gather", description = "under --use-distributed-optimizer or --data-parallel-sharding-strategy optim/optim_grads, all-gather the updated weights in chunks on the communication thread, each waited for before its first use in the next forward (under optim_grads_params: start the next layer's all-gather while the current one computes, forward and backward); needs --overlap-grad-reduce (default: off)") public boolean overlapParamGather;

    // data
    @Option(names = "--mock-data", description = "synthetic learnable sequences from the seed") public boolean mockData;
    @Option(names = "--replay-batches", description = "int64 [iters, global_batch, seq+1] safetensors to train on, in order (token -1: Megatron's pad id, a label left out of the loss)") public Path replayBatches;
    @Option(names = "--replay-key", defaultValue = "train_batches") public String replayKey;
    @Option(names = "--data-path", arity = "1..*", description = "Megatron datasets: PREFIX, or WEIGHT PREFIX WEIGHT PREFIX ... (blend)") public java.util.List<String> dataPath;
    @Option(names = "--split", defaultValue = "969,30,1", description = "train,valid,test proportions (default: ${DEFAULT-VALUE})") public String split;
    @Option(names = "--data-cache-path", description = "where index files are cached (default: beside the data)") public Path dataCachePath;
    @Option(names = "--tokenizer-type", description = "HuggingFaceTokenizer, GPT2BPETokenizer or ByteLevelTokenizer: gives the vocabulary size") public String tokenizerType;
    @Option(names = "--tokenizer-model", description = "tokenizer.json or its directory") public Path tokenizerModel;
    @Option(names = "--vocab-file", description = "GPT2BPETokenizer: GPT-2's vocab.json (default: none)") public Path vocabFile;
    @Option(names = "--merge-file", description = "GPT2BPETokenizer: GPT-2's merges.txt (default: none)") public Path mergeFile;
    @Option(names = "--make-vocab-size-divisible-by", defaultValue = "128") public int makeVocabSizeDivisibleBy;

    // checkpoints
    @Option(names = "--save", description = "checkpoint directory to write") public Path save;
    @Option(names = "--save-interval", description = "iterations between checkpoints (default: only at the end)") public Long saveInterval;
    @Option(names = "--load", description = "checkpoint to resume (djl) or start from (hf, megatron, megatron-dist, djl weights)") public Path load;
    @Option(names = "--no-load-optim", description = "with --load: keep the iteration and data position, start the optimizer state, schedule and loss scale afresh") public boolean noLoadOptim;
    @Option(names = "--no-load-rng", description = "accepted for Megatron compatibility (no RNG state is saved: everything random follows --seed)") public boolean noLoadRng;
    @Option(names = "--finetune", description = "with --load: take the weights only; iteration 0, fresh optimizer, data from the start") public boolean finetune;
    @Option(names = "--model-config", description = "Megatron arguments as JSON, for Megatron checkpoints without args") public Path modelConfig;
    @Option(names = "--no-verify", description = "with --load: skip comparing the checkpoint's files with their recorded checksums (faster)") public boolean noVerify;
    @Option(names = "--allow-nonfinite", description = "with --load/--init-hf: accept NaN or infinite weights (refused by default)") public boolean allowNonFinite;

    // ours and logging
    @Option(names = "--init-hf", description = "start from a Hugging Face checkpoint (its config gives the shape)") public Path initHf;
    @Option(names = "--metrics-out", description = "JSONL file, one object per iteration") public Path metricsOut;
    @Option(names = "--seed", defaultValue = "1234") public long seed;
    @Option(names = "--log-interval", defaultValue = "10") public int logInterval;
    @Option(names = "--eval-interval", defaultValue = "0") public long evalInterval;
    @Option(names = "--eval-iters", defaultValue = "10") public int evalIters;

    private String[] commandLine = new String[0];

    /** The arguments as given (recorded in checkpoints). */
    public String[] commandLine() {
        return commandLine.clone();
    }

    public void setCommandLine(String[] args) {
        commandLine = args.clone();
    }

    /** What reading a checkpoint verifies ({@code --no-verify}, {@code --allow-nonfinite}). */
    public org.djlmegatron.bridge.convert.ReadChecks readChecks() {
        return new org.djlmegatron.bridge.convert.ReadChecks(!noVerify, allowNonFinite);
    }

    /** The model shape from the shape flags. */
    public TransformerConfig modelConfig() {
        String norm = normalization.toLowerCase(Locale.ROOT);
        if (!norm.equals("layernorm") && !norm.equals("rmsnorm")) {
            throw new IllegalArgumentException("--normalization must be LayerNorm or RMSNorm, found " + normalization);
        }
        String pos = positionEmbeddingType.toLowerCase(Locale.ROOT);
        if (!pos.equals("learned_absolute") && !pos.equals("rope")) {
            throw new IllegalArgumentException("--position-embedding-type must be learned_absolute or rope, found "
                    + positionEmbeddingType);
        }
        TransformerConfig.Builder b = TransformerConfig.builder()
                .numLayers(numLayers).hiddenSize(hiddenSize).numAttentionHeads(numAttentionHeads)
                .vocabSize(vocabSize)
                .maxPositionEmbeddings(maxPositionEmbeddings != null ? maxPositionEmbeddings : seqLength)
                .normalization(norm.equals("rmsnorm") ? Norm.Kind.RMS_NORM : Norm.Kind.LAYER_NORM)
                .normEpsilon(normEpsilon)
                .activation(swiglu ? TransformerConfig.Activation.SWIGLU : TransformerConfig.Activation.GELU_TANH)
                .positionEmbedding(pos.equals("rope") ? TransformerConfig.PositionEmbedding.ROPE
                        : TransformerConfig.PositionEmbedding.LEARNED_ABSOLUTE)
                .rotaryBase(rotaryBase)
                .ropeScaling(ropeScaling())
                .addBiasLinear(!disableBiasLinear && numExperts == 0)
                .addQkvBias(addQkvBias || (!disableBiasLinear && numExperts == 0))
                .qkLayernorm(qkLayernorm)
                .tieEmbeddings(!untieEmbeddings)
                .numExperts(numExperts).moeRouterTopK(moeRouterTopk);
        if (numQueryGroups != null) {
            b.numQueryGroups(numQueryGroups);
        }
        if (kvChannels != null) {
            b.kvChannels(kvChannels);
        }
        if (ffnHiddenSize != null) {
            b.ffnHiddenSize(ffnHiddenSize);
        }
        if (moeFfnHiddenSize != null) {
            b.moeFfnHiddenSize(moeFfnHiddenSize);
        }
        if (moeSharedExpertIntermediateSize != null) {
            b.moeSharedExpertIntermediateSize(moeSharedExpertIntermediateSize);
        }
        b.moeSharedExpertGate(moeSharedExpertGate);
        return b.build();
    }

    private RopeScaling ropeScaling() {
        if (useRopeScaling && rotarySeqLenInterpolationFactor != null) {
            throw new IllegalArgumentException("give --use-rope-scaling or --rotary-seq-len-interpolation-factor, not both");
        }
        if (useRopeScaling) {
            return RopeScaling.megatronLlama3(ropeScalingFactor);
        }
        return rotarySeqLenInterpolationFactor == null ? null : RopeScaling.linear(rotarySeqLenInterpolationFactor);
    }

    /** The optimizer factory for {@code --optimizer}. */
    public java.util.function.Supplier<FlatOptimizer> optimizerFactory() {
        switch (optimizer.toLowerCase(Locale.ROOT)) {
            case "adam":
            case "adamw":
                return () -> new FlatAdamW(adamBeta1, adamBeta2, adamEps, weightDecay);
            case "sgd":
                return () -> new FlatSgd(sgdMomentum, weightDecay);
            default:
                throw new IllegalArgumentException("--optimizer must be adam or sgd, found " + optimizer);
        }
    }

    /** Megatron's schedule from the lr flags. */
    public LearningRateSchedule schedule() {
        LearningRateSchedule.DecayStyle style = decayStyle();
        long decay = lrDecayIters != null ? lrDecayIters : trainIters;
        long warmup = lrWarmupIters;
        if (lrWarmupFraction != null) {
            if (lrWarmupIters != 0) {
                throw new IllegalArgumentException("give --lr-warmup-iters or --lr-warmup-fraction, not both");
            }
            warmup = (long) (lrWarmupFraction * decay);
        }
        long wsd = lrWsdDecayIters != null ? lrWsdDecayIters : 0;
        if (style == LearningRateSchedule.DecayStyle.WSD && lrWsdDecayIters == null) {
            throw new IllegalArgumentException("--lr-decay-style WSD needs --lr-wsd-decay-iters");
        }
        LearningRateSchedule.AnnealStyle anneal = LearningRateSchedule.AnnealStyle.valueOf(
                lrWsdDecayStyle.toUpperCase(Locale.ROOT).replace('-', '_'));
        return new LearningRateSchedule(lr, minLr, warmup, decay, style, wsd, anneal);
    }

    private LearningRateSchedule.DecayStyle decayStyle() {
        String s = lrDecayStyle.toUpperCase(Locale.ROOT).replace('-', '_');
        try {
            return LearningRateSchedule.DecayStyle.valueOf(s);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--lr-decay-style must be constant, linear, cosine, "
                    + "inverse-square-root or WSD, found " + lrDecayStyle);
        }
    }

    /** Refuses what the model would silently ignore. */
    /** The dtype weights are held and computed in: fp16 weights compute in fp32 (see ParallelBlock.value). */
    public DataType parameterType() {
        return fp16 ? DataType.FLOAT16 : bf16 ? DataType.BFLOAT16 : DataType.FLOAT32;
    }

    /** {@code --attention-backend}, resolved (fused without the native library is refused). */
    public AttentionBackend attentionBackend() {
        try {
            return AttentionBackend.valueOf(attentionBackend.toUpperCase(Locale.ROOT)).resolve();
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--attention-backend must be auto, fused or unfused, found " + attentionBackend);
        }
    }

    /** The ZeRO stage: {@code --data-parallel-sharding-strategy}, else optim with {@code --use-distributed-optimizer}, else no_shard. */
    public ShardingStrategy sharding() {
        if (dataParallelShardingStrategy == null) {
            return useDistributedOptimizer ? ShardingStrategy.OPTIM : ShardingStrategy.NO_SHARD;
        }
        ShardingStrategy s = java.util.Arrays.stream(ShardingStrategy.values())
                .filter(v -> v.flagValue().equals(dataParallelShardingStrategy)).findFirst()
                .orElseThrow(() -> new InvalidOptionException("--data-parallel-sharding-strategy",
                        "no_shard, optim, optim_grads or optim_grads_params", dataParallelShardingStrategy));
        if (useDistributedOptimizer && !s.shardsOptimizer()) {
            throw new InvalidOptionException("--use-distributed-optimizer", "not together with "
                    + "--data-parallel-sharding-strategy " + s.flagValue() + " (it means optim)", "both");
        }
        return s;
    }

    /** Loss scaling for the precision flags. */
    public java.util.function.Supplier<LossScaler> scaler() {
        if (bf16 && fp16) {
            throw new IllegalArgumentException("give --fp16 or --bf16, not both");
        }
        if (bf16 && !TorchNative.isAvailable()) {
            throw new IllegalArgumentException("--bf16 needs the djl-megatron native library: DJL's stock PyTorch JNI "
                    + "aborts the JVM on bfloat16 tensors; build it (docs/native.md), or use --fp16, or fp32 (no flag)");
        }
        if (!fp16) {
            return LossScaler::none;
        }
        if (lossScale != null) {
            return () -> LossScaler.fixed(lossScale);
        }
        return () -> LossScaler.dynamic(initialLossScale, minLossScale, lossScaleWindow, hysteresis);
    }

    /**
     * The layer split over pipeline stages (Megatron's flags); impossible splits fail here, naming
     * the numbers, before any rank starts.
     */
    public org.djlmegatron.pipeline.PipelineLayout pipelineLayout(int numLayers) {
        Integer vp = virtualPipelineModelParallelSize;
        if (numLayersPerVirtualPipelineStage != null) {
            if (vp != null) {
                throw new IllegalArgumentException("give --virtual-pipeline-model-parallel-size or "
                        + "--num-layers-per-virtual-pipeline-stage, not both");
            }
            int perRank = numLayers / Math.max(1, pipelineModelParallelSize);
            if (numLayersPerVirtualPipelineStage < 1 || numLayers % Math.max(1, pipelineModelParallelSize) != 0
                    || perRank % numLayersPerVirtualPipelineStage != 0) {
                throw new IllegalArgumentException("--num-layers-per-virtual-pipeline-stage " + numLayersPerVirtualPipelineStage
                        + " does not divide the " + numLayers + " layers / --pipeline-model-parallel-size "
                        + pipelineModelParallelSize);
            }
            vp = perRank / numLayersPerVirtualPipelineStage;
        }
        org.djlmegatron.pipeline.PipelineLayout layout = org.djlmegatron.pipeline.PipelineLayout.of(numLayers,
                pipelineModelParallelSize, vp == null ? 1 : vp, decoderFirstPipelineNumLayers, decoderLastPipelineNumLayers);
        return layout;
    }

    /** The step's overlap ({@code --overlap-grad-reduce}, {@code --overlap-param-gather}); waits are bounded by {@code timeout}. */
    org.djlmegatron.training.buffers.Overlap overlap(java.time.Duration timeout) {
        return new org.djlmegatron.training.buffers.Overlap(overlapGradReduce, overlapParamGather, timeout);
    }
}
