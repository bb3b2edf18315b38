package org.djlmegatron.pretrain;

import static org.djlmegatron.options.OptionChecks.exclusive;
import static org.djlmegatron.options.OptionChecks.inRange;
import static org.djlmegatron.options.OptionChecks.nonNegative;
import static org.djlmegatron.options.OptionChecks.nonNegativeFinite;
import static org.djlmegatron.options.OptionChecks.positive;
import static org.djlmegatron.options.OptionChecks.positiveFinite;

import org.djlmegatron.options.InvalidOptionException;

/**
 * Every {@code pretrain-gpt} option's range, checked before anything is built or read, so a bad
 * value is one line naming the flag rather than an arithmetic error (or a NaN run) later.
 * Megatron's own argument checks where it has them (hidden size divisible by the heads).
 */
final class PretrainValidation {

    private PretrainValidation() {}

    static void validate(PretrainOptions o) {
        modelShape(o);
        batchAndIterations(o);
        optimizer(o);
        precision(o);
        parallelAndLogging(o);
        ShardingValidation.validate(o);
        exclusive("--mock-data", o.mockData, "--data-path", o.dataPath != null);
        exclusive("--mock-data", o.mockData, "--replay-batches", o.replayBatches != null);
        exclusive("--data-path", o.dataPath != null, "--replay-batches", o.replayBatches != null);
    }

    private static void modelShape(PretrainOptions o) {
        positive("--num-layers", o.numLayers);
        positive("--hidden-size", o.hiddenSize);
        positive("--num-attention-heads", o.numAttentionHeads);
        positive("--num-query-groups", o.numQueryGroups);
        positive("--kv-channels", o.kvChannels);
        positive("--ffn-hidden-size", o.ffnHiddenSize);
        positive("--seq-length", o.seqLength);
        positive("--max-position-embeddings", o.maxPositionEmbeddings);
        positiveFinite("--norm-epsilon", o.normEpsilon);
        positiveFinite("--rotary-base", o.rotaryBase);
        nonNegative("--num-experts", o.numExperts);
        positive("--moe-router-topk", o.moeRouterTopk);
        positive("--moe-ffn-hidden-size", o.moeFfnHiddenSize);
        positive("--vocab-size", o.vocabSize);
        positive("--make-vocab-size-divisible-by", o.makeVocabSizeDivisibleBy);
        nonNegativeFinite("--init-method-std", o.initMethodStd);
        inRange("--hidden-dropout", o.activations.hiddenDropout, 0, 1, false);
        inRange("--attention-dropout", o.activations.attentionDropout, 0, 1, false);
        positive("--recompute-num-layers", o.activations.recomputeNumLayers);
        if (o.kvChannels == null && o.hiddenSize % o.numAttentionHeads != 0) {
            throw new InvalidOptionException("--hidden-size", "a multiple of --num-attention-heads "
                    + o.numAttentionHeads + " (or give --kv-channels)", o.hiddenSize);
        }
        positive("--moe-shared-expert-intermediate-size", o.moeSharedExpertIntermediateSize);
        if (o.moeSharedExpertIntermediateSize != null && o.numExperts == 0) {
            throw new InvalidOptionException("--moe-shared-expert-intermediate-size", "an MoE model (--num-experts > 0)",
                    o.moeSharedExpertIntermediateSize);
        }
        if (o.moeSharedExpertGate && o.moeSharedExpertIntermediateSize == null) {
            throw new InvalidOptionException("--moe-shared-expert-gate", "--moe-shared-expert-intermediate-size", "absent");
        }
        if (o.numExperts > 0 && o.moeRouterTopk > o.numExperts) {
            throw new InvalidOptionException("--moe-router-topk", "at most --num-experts " + o.numExperts,
                    o.moeRouterTopk);
        }
    }

    private static void batchAndIterations(PretrainOptions o) {
        positive("--micro-batch-size", o.microBatchSize);
        positive("--global-batch-size", o.globalBatchSize);
        positive("--train-iters", o.trainIters);
        positive("--save-interval", o.saveInterval);
        positive("--lr-decay-iters", o.lrDecayIters);
        nonNegative("--lr-warmup-iters", o.lrWarmupIters);
        inRange("--lr-warmup-fraction", o.lrWarmupFraction, 0, 1, true);
        nonNegative("--lr-wsd-decay-iters", o.lrWsdDecayIters);
    }

    private static void optimizer(PretrainOptions o) {
        nonNegativeFinite("--lr", o.lr);
        nonNegativeFinite("--min-lr", o.minLr);
        inRange("--adam-beta1", o.adamBeta1, 0, 1, false);
        inRange("--adam-beta2", o.adamBeta2, 0, 1, false);
        positiveFinite("--adam-eps", o.adamEps);
        inRange("--sgd-momentum", o.sgdMomentum, 0, 1, false);
        nonNegativeFinite("--weight-decay", o.weightDecay);
        nonNegativeFinite("--clip-grad", o.clipGrad);
    }

    private static void precision(PretrainOptions o) {
        positiveFinite("--loss-scale", o.lossScale);
        positiveFinite("--initial-loss-scale", o.initialLossScale);
        positiveFinite("--min-loss-scale", o.minLossScale);
        positive("--loss-scale-window", o.lossScaleWindow);
        positive("--hysteresis", o.hysteresis);
    }

    private static void parallelAndLogging(PretrainOptions o) {
        positive("--tensor-model-parallel-size", o.tensorModelParallelSize);
        positive("--nproc-per-node", o.nprocPerNode);
        positive("--intra-op-threads", o.intraOpThreads);
        positive("--ddp-bucket-size", o.ddpBucketSize);
        if (o.overlapParamGather && !o.useDistributedOptimizer && !o.sharding().shardsOptimizer()) {
            throw new IllegalArgumentException("--overlap-param-gather needs --use-distributed-optimizer (Megatron's rule) "
                    + "or --data-parallel-sharding-strategy optim, optim_grads or optim_grads_params");
        }
        if (o.overlapParamGather && !o.overlapGradReduce) {
            throw new IllegalArgumentException("--overlap-param-gather needs --overlap-grad-reduce (Megatron's rule)");
        }
        positive("--log-interval", o.logInterval);
        nonNegative("--eval-interval", o.evalInterval);
        if (o.evalInterval > 0) {
            positive("--eval-iters", o.evalIters);
        } else {
            nonNegative("--eval-iters", o.evalIters);
        }
        nonNegative("--seed", o.seed);
    }
}
