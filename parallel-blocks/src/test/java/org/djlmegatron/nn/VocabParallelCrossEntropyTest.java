package org.djlmegatron.nn;

import static org.assertj.core.api.Assertions.assertThat;
import static org.djlmegatron.ParityHarness.TOLERANCE;
import static org.djlmegatron.ParityHarness.maxAbsDiff;
import static org.djlmegatron.ParityHarness.onRanks;
import static org.djlmegatron.ParityHarness.relativeError;
import static org.djlmegatron.ParityHarness.tpRank;
import static org.djlmegatron.ParityHarness.tpSize;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.Shape;
import java.util.List;
import org.djlmegatron.ParityHarness.Sharding;
import org.djlmegatron.ParityHarness.Tensor;
import org.djlmegatron.autograd.RegionMappings;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The vocab-parallel cross-entropy at TP=1, 2 and 4 against a plain log-softmax cross-entropy on
 * the full logits, computed here in doubles: the mean loss, the per-token losses and the gradient
 * with respect to each rank's local logits, with some labels ignored (-100).
 */
class VocabParallelCrossEntropyTest {

    private static final int BATCH = 2;
    private static final int SEQ = 8;
    private static final int VOCAB = 32;
    private static final Tensor LOGITS = Tensor.random(42, 3.0, BATCH, SEQ, VOCAB);
    /** Labels in every quarter of the vocabulary, and three ignored positions. */
    private static final long[] LABELS = {
        0, 31, 8, -100, 16, 24, 7, 15,
        23, -100, 1, 9, 17, 25, 30, -100};

    /** One rank's result: mean loss, per-token losses, gradient of its local logits. */
    private record Result(float loss, float[] tokenLosses, Tensor localGrad) {}

    @ParameterizedTest(name = "TP={0}")
    @ValueSource(ints = {1, 2, 4})
    void matchesPlainCrossEntropyOnFullLogits(int tp) {
        Reference ref = reference();
        List<Result> ranks = onRanks(tp, ctx -> {
            NDArray local = Sharding.split(-1).shard(LOGITS, tpRank(ctx), tpSize(ctx)).toNd(ctx.manager());
            local.setRequiresGradient(true);
            NDArray labels = ctx.manager().create(LABELS, new Shape(BATCH, SEQ));
            VocabParallelCrossEntropy ce = new VocabParallelCrossEntropy(new RegionMappings(ctx.tensorGroup()));
            NDArray loss = ce.meanLoss(local, labels);
            ctx.tape().backward(loss);
            float[] tokens = ce.tokenLosses(local, labels).toFloatArray();
            return new Result(loss.getFloat(), tokens, Tensor.of(local.getGradient()));
        });
        for (Result r : ranks) {
            assertThat(Math.abs(r.loss() - ref.loss)).as("mean loss").isLessThanOrEqualTo(TOLERANCE);
            assertThat(r.loss()).as("every rank has the same loss").isEqualTo(ranks.get(0).loss());
            assertThat(maxAbsDiff(r.tokenLosses(), ref.tokenLosses)).as("per-token losses")
                    .isLessThanOrEqualTo(TOLERANCE);
        }
        Tensor grad = Sharding.split(-1).assemble(ranks.stream().map(Result::localGrad).toList(), "grad");
        assertThat(relativeError(grad.data(), ref.grad)).as("gradient of the logits")
                .isLessThanOrEqualTo(TOLERANCE);
    }

    /** Plain cross-entropy: loss_t = logsumexp(z_t) - z_t[label]; grad = (softmax - onehot) / count. */
    private record Reference(double loss, float[] tokenLosses, float[] grad) {}

    private static Reference reference() {
        float[] tokenLosses = new float[BATCH * SEQ];
        float[] grad = new float[BATCH * SEQ * VOCAB];
        int count = 0;
        for (long label : LABELS) {
            count += label >= 0 ? 1 : 0;
        }
        double total = 0;
        for (int t = 0; t < BATCH * SEQ; t++) {
            long label = LABELS[t];
            if (label < 0) {
                continue; // ignored: no loss, no gradient
            }
            double max = Double.NEGATIVE_INFINITY;
            for (int v = 0; v < VOCAB; v++) {
                max = Math.max(max, LOGITS.data()[t * VOCAB + v]);
            }
            double sum = 0;
            for (int v = 0; v < VOCAB; v++) {
                sum += Math.exp(LOGITS.data()[t * VOCAB + v] - max);
            }
            double lse = max + Math.log(sum);
            double loss = lse - LOGITS.data()[t * VOCAB + (int) label];
            tokenLosses[t] = (float) loss;
            total += loss;
            for (int v = 0; v < VOCAB; v++) {
                double p = Math.exp(LOGITS.data()[t * VOCAB + v] - lse);
                grad[t * VOCAB + v] = (float) ((p - (v == label ? 1 : 0)) / count);
            }
        }
        return new Reference(total / count, tokenLosses, grad);
    }
}
