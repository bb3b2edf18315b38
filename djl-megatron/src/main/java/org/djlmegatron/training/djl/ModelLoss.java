package org.djlmegatron.training.djl;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.pytorch.jni.JniUtils;
import ai.djl.training.loss.Loss;
import java.util.IdentityHashMap;
import java.util.Map;
import java.util.function.BiFunction;

/**
 * The model's own loss as a DJL {@link Loss}: predictions are this rank's logits (for a GPT, its
 * vocabulary shard), so the loss is the model's (vocab-parallel cross-entropy, e.g.
 * {@code GPTModel::lossFromLogits}), not one computed from full logits.
 *
 * <p>DJL evaluates the loss twice per training batch: for backward, then for the evaluators in
 * {@code onTrainingBatch}. The second look returns the first one's value (no second collective,
 * nothing recorded on the tape); validation batches are evaluated with grad mode off.
 */
public final class ModelLoss extends Loss {

    private final BiFunction<NDArray, NDArray, NDArray> lossFromLogits;
    private final Map<NDArray, NDArray> computed = new IdentityHashMap<>();
    private NDArray training;

    /** A loss named {@code name} computed by {@code lossFromLogits(localLogits, labels)}. */
    public ModelLoss(String name, BiFunction<NDArray, NDArray, NDArray> lossFromLogits) {
        super(name);
        this.lossFromLogits = lossFromLogits;
    }

    /** {@link ParallelTrainer}: {@code logits} come from a training forward pass; their loss is back-propagated. */
    void expectTraining(NDArray logits) {
        training = logits;
    }

    /** {@link ParallelTrainer}: a new step; values kept from the last one are dropped. */
    void newStep() {
        computed.clear();
        training = null;
    }

    @Override
    public NDArray evaluate(NDList labels, NDList predictions) {
        NDArray logits = predictions.head();
        NDArray known = computed.remove(logits);
        if (known != null) {
            return known;
        }
        if (logits == training) {
            training = null;
            NDArray loss = lossFromLogits.apply(logits, labels.head());
            computed.put(logits, loss.stopGradient());
            return loss;
        }
        boolean gradMode = JniUtils.isGradMode();
        JniUtils.setGradMode(false);
        try {
            return lossFromLogits.apply(logits, labels.head());
        } finally {
            JniUtils.setGradMode(gradMode);
        }
    }
}
