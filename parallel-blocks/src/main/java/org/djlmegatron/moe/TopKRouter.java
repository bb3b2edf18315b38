package org.djlmegatron.moe;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Activation;
import ai.djl.nn.Parameter;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.engine.Cast;
import org.djlmegatron.nn.ParallelBlock;
import org.djlmegatron.nn.ShardLayout;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Megatron-Core's top-k router: scores over all experts in fp32 (softmax, or sigmoid), the k
 * largest kept; softmax weights optionally renormalised to sum to one (Mixtral, Qwen3-MoE's
 * {@code norm_topk_prob}; Megatron's default top-k-then-softmax is the same thing), sigmoid
 * weights always renormalised when k > 1. In training it adds the load-balancing loss
 * ({@code aux_loss}: E coeff / (k T^2) sum_e (sum_t p_te) n_e; {@code seq_aux_loss}: the same per
 * sequence, averaged) and the z-loss (coeff mean_t logsumexp(logits_t)^2) to the tape as extra
 * backward roots. Its weight is replicated; its gradient is summed over the tensor-parallel group
 * (the experts' outputs are partial there), so each TP rank, which routes the whole sequence,
 * contributes 1/tp of the extra losses' gradient.
 *
 * <p>Under context parallelism a rank routes its chunks of each sequence only: the tokens per
 * expert (per sequence for {@code seq_aux_loss}) and the token count are the whole sequence's
 * (summed over the context-parallel group), each rank's loss is the term of its own tokens'
 * probabilities, scaled by CP like the main loss (gradients are averaged over data x context). The
 * z-loss, a mean over tokens, needs nothing: the average of the CP ranks' means is the mean.
 */
public final class TopKRouter extends ParallelBlock {

    /**
     * Chosen experts {@code [T, k]} (int64), their weights {@code [T, k]} (fp32), and the
     * unscaled (coefficient-free) load-balancing and z losses, NaN when not computed.
     */
    public record Routing(NDArray experts, NDArray weights, double auxLoss, double zLoss) {}

    private final Parameter weight;
    private final int topK;
    private final int numExperts;
    private final boolean renormalize;
    private final ProcessGroup cp;
    private MoeConfig moe = MoeConfig.DEFAULT;
    private float[] expertBias; // aux-loss-free balancing (--moe-router-enable-expert-bias), null when off

    public TopKRouter(RankContext ctx, TransformerConfig cfg) {
        super(ctx);
        weight = param("weight", new Shape(cfg.numExperts(), cfg.hiddenSize()), ShardLayout.REPLICATED,
                tp.isParallel(), ShardedParameter.Init.NORMAL);
        topK = cfg.moeRouterTopK();
        numExperts = cfg.numExperts();
        renormalize = cfg.moeRenormalizeTopK();
        cp = ctx.group(GroupKind.CONTEXT);
    }

    /** Score function, balancing losses and their coefficients. */
    public void setConfig(MoeConfig moe) {
        this.moe = moe;
    }

    /**
     * Turns on aux-loss-free balancing: a per-expert bias (starting at 0) added to the scores for
     * choosing the top k only; the weights stay the unbiased scores. Megatron allows it with the
     * sigmoid score function only.
     */
    public void enableExpertBias() {
        if (moe.scoreFunction() != MoeConfig.ScoreFunction.SIGMOID) {
            throw new IllegalArgumentException("--moe-router-enable-expert-bias needs --moe-router-score-function sigmoid"
                    + " (Megatron's rule), got " + moe.scoreFunction().name().toLowerCase(java.util.Locale.ROOT));
        }
        expertBias = new float[numExperts];
    }

    /** The expert bias, or null when off. */
    public float[] expertBias() {
        return expertBias == null ? null : expertBias.clone();
    }

    /** Sets the expert bias (a checkpoint's); the balancing must be on and the length {@code num_experts}. */
    public void restoreExpertBias(float[] bias) {
        if (expertBias == null || bias.length != numExperts) {
            throw new IllegalArgumentException("expert bias of " + bias.length + " experts for a router of " + numExperts
                    + (expertBias == null ? " without --moe-router-enable-expert-bias" : ""));
        }
        expertBias = bias.clone();
    }

    /**
     * Megatron's update after a step: each expert's bias moves by {@code rate} towards balance,
     * {@code bias_e += rate * sign(mean_load - load_e)}, from the global batch's tokens per expert.
     */
    public void updateExpertBias(long[] tokensPerExpert, double rate) {
        double mean = 0;
        for (long c : tokensPerExpert) {
            mean += (double) c / tokensPerExpert.length;
        }
        for (int e = 0; e < numExperts; e++) {
            expertBias[e] += (float) (rate * Math.signum(mean - tokensPerExpert[e]));
        }
    }

    /** Routes tokens {@code [T, hidden]} that come from {@code batch} sequences of equal length (b-major). */
    public Routing route(NDArray tokens, int batch) {
        NDArray logits = Cast.to(tokens.getNDArrayInternal().linear(tokens, value(weight, tokens), null)
                .singletonOrThrow(), DataType.FLOAT32);
        NDArray scores = moe.scoreFunction() == MoeConfig.ScoreFunction.SOFTMAX
                ? logits.softmax(-1) : Activation.sigmoid(logits);
        NDList top;
        NDArray w;
        if (expertBias == null) {
            top = scores.topK(topK, -1, true, true);
            w = top.get(0);
        } else { // choose by biased scores, weigh by the unbiased ones
            NDArray bias;
            try (NDArray javaBacked = scores.getManager().create(expertBias)) {
                bias = javaBacked.duplicate();
            }
            top = scores.stopGradient().add(bias).topK(topK, -1, true, true);
            w = scores.gather(top.get(1), 1);
        }
        if (moe.scoreFunction() == MoeConfig.ScoreFunction.SIGMOID ? topK > 1 : renormalize) {
            NDArray sum = w.sum(new int[] {-1}, true);
            w = w.div(moe.scoreFunction() == MoeConfig.ScoreFunction.SIGMOID ? sum.add(constant(w, 1e-20)) : sum);
        }
        double aux = Double.NaN;
        double z = Double.NaN;
        if (moe.hasAuxLoss() && ai.djl.pytorch.jni.JniUtils.isGradMode()) {
            NDArray probs = moe.scoreFunction() == MoeConfig.ScoreFunction.SOFTMAX ? scores
                    : scores.div(scores.sum(new int[] {-1}, true).add(constant(scores, 1e-20)));
            // Megatron counts the unbiased top k here: the expert bias steers the choice, not the loss
            NDArray counted = expertBias == null ? top.get(1) : scores.topK(topK, -1, true, true).get(1);
            NDArray routingMap = counted.oneHot(numExperts).sum(new int[] {1}); // [T, E] 0/1
            BalancingLoss loss = moe.loadBalancing() == MoeConfig.LoadBalancing.AUX_LOSS
                    ? auxLoss(probs, routingMap) : seqAuxLoss(probs, routingMap, batch);
            aux = loss.value().getFloat();
            tape().addLoss(loss.term().mul(constant(loss.term(), moe.auxLossCoeff() * cp.size() / tp.group().size())));
        }
        if (moe.zLossCoeff() > 0 && ai.djl.pytorch.jni.JniUtils.isGradMode()) {
            NDArray lse = logits.logSoftmax(-1).neg().add(logits); // logsumexp = x - log_softmax(x)
            NDArray loss = lse.get(":, 0").square().mean();
            z = loss.getFloat();
            tape().addLoss(loss.mul(constant(loss, moe.zLossCoeff() / tp.group().size())));
        }
        return new Routing(top.get(1), w, aux, z);
    }

    /**
     * A load-balancing loss without its coefficient: {@code term}, this rank's share (recorded on
     * the tape), and {@code value}, the whole loss (the same array without context parallelism).
     */
    private record BalancingLoss(NDArray term, NDArray value) {}

    /**
     * E / (k T^2) sum_e (sum_t p_te) n_e. Under CP, n_e and T are the whole sequences' and the
     * term sums this rank's probabilities only.
     */
    private BalancingLoss auxLoss(NDArray probs, NDArray routingMap) {
        long t = probs.getShape().get(0) * cp.size();
        NDArray perExpert = probs.sum(new int[] {0});
        NDArray[] global = overContext(perExpert, routingMap.sum(new int[] {0}), 0);
        NDArray scale = constant(probs, (double) numExperts / ((double) topK * t * t));
        NDArray term = perExpert.mul(global[1]).sum().mul(scale);
        return new BalancingLoss(term, cp.size() == 1 ? term : global[0].mul(global[1]).sum().mul(scale));
    }

    /** Per sequence: sum_e (n_e E / (s k)) mean_s p_e; averaged over the batch; under CP as {@link #auxLoss}. */
    private BalancingLoss seqAuxLoss(NDArray probs, NDArray routingMap, int batch) {
        long local = probs.getShape().get(0) / batch;
        long s = local * cp.size();
        NDArray p = probs.reshape(batch, local, numExperts).sum(new int[] {1}).div(constant(probs, s));
        NDArray[] global = overContext(p, routingMap.reshape(batch, local, numExperts).sum(new int[] {1}), 1);
        NDArray cost = global[1].div(constant(probs, (double) s * topK / numExperts));
        NDArray term = cost.mul(p).sum(new int[] {1}).mean();
        return new BalancingLoss(term, cp.size() == 1 ? term : cost.mul(global[0]).sum(new int[] {1}).mean());
    }

    /**
     * {probabilities, counts} summed over the context-parallel group (one all-reduce, outside the
     * tape: both are constants of the recorded term), concatenated and split along {@code axis}.
     */
    private NDArray[] overContext(NDArray probs, NDArray counts, int axis) {
        if (cp.size() == 1) {
            return new NDArray[] {probs, counts};
        }
        long e = probs.getShape().get(axis);
        NDArray both = cp.allReduce(probs.stopGradient().concat(counts, axis), ReduceOp.SUM);
        String all = axis == 0 ? "" : ":, ";
        return new NDArray[] {both.get(all + "0:" + e), both.get(all + e + ":")};
    }

    /**
     * A libtorch-owned constant for recorded arithmetic (DJL's {@code mul(Number)} wraps the number
     * in a Java buffer that backward may read after it is freed; see {@code Scalar}).
     */
    private static NDArray constant(NDArray like, double v) {
        return org.djlmegatron.autograd.Scalar.of(like.getManager(), v);
    }

    @Override
    public NDArray apply(NDArray x) {
        throw new UnsupportedOperationException("use route()");
    }
}
