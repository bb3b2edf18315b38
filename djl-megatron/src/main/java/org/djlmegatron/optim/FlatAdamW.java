package org.djlmegatron.optim;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.index.NDIndex;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.djlmegatron.engine.TorchNative;

/**
 * AdamW with decoupled weight decay, in the order and arithmetic of PyTorch's
 * {@code torch.optim.AdamW} (single-tensor path): decay, moments, bias-corrected step. On the
 * project's native library the step is one native call over the flat buffer (the benefit of a
 * fused multi-tensor kernel, one launch per op instead of one per parameter, comes from the flat
 * buffer already); the composed DJL ops otherwise.
 */
public final class FlatAdamW implements FlatOptimizer {

    private final double beta1;
    private final double beta2;
    private final double eps;
    private final double weightDecay;
    private NDArray expAvg;
    private NDArray expAvgSq;

    public FlatAdamW(double beta1, double beta2, double eps, double weightDecay) {
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.eps = eps;
        this.weightDecay = weightDecay;
    }

    @Override
    public void step(NDArray masters, NDArray grads, NDArray decayMask, double lr, long step) {
        if (expAvg == null) {
            expAvg = masters.zerosLike();
            expAvgSq = masters.zerosLike();
        }
        if (TorchNative.isAvailable()) { // the same arithmetic in one native call, no temporaries
            TorchNative.adamwStep(masters, grads, expAvg, expAvgSq, decayMask, lr, beta1, beta2, eps, weightDecay, step);
            return;
        }
        if (weightDecay != 0) {
            // p *= 1 - lr*wd where decay applies, 1 elsewhere
            try (NDArray factor = decayMask.mul((float) (-lr * weightDecay)).add(1f)) {
                masters.muli(factor);
            }
        }
        try (NDArray g1 = grads.mul((float) (1 - beta1));
                NDArray g2 = grads.square().mul((float) (1 - beta2))) {
            expAvg.muli((float) beta1).addi(g1);
            expAvgSq.muli((float) beta2).addi(g2);
        }
        double bc1 = 1 - Math.pow(beta1, step);
        double bc2Sqrt = Math.sqrt(1 - Math.pow(beta2, step));
        try (NDArray denom = expAvgSq.sqrt().divi((float) bc2Sqrt).addi((float) eps);
                NDArray update = expAvg.div(denom).muli((float) (-lr / bc1))) {
            masters.addi(update);
        }
    }

    /** On the native library with CPU fp32 tensors: one pass, the clipping folded in; else as the interface. */
    @Override
    public void step(NDArray masters, NDArray grads, NDArray decayMask, double gradScale, double lr, long step) {
        if (!inOnePass(masters)) {
            FlatOptimizer.super.step(masters, grads, decayMask, gradScale, lr, step);
            return;
        }
        if (expAvg == null) {
            expAvg = masters.zerosLike();
            expAvgSq = masters.zerosLike();
        }
        TorchNative.adamwInPlace(masters, grads, expAvg, expAvgSq, decayMask, (float) gradScale, lr, beta1, beta2, eps,
                weightDecay, step);
    }

    /** On the native library with CPU fp32 parts: each part updated where it is, with its slice of the moments. */
    @Override
    public void step(List<NDArray> parts, NDArray grads, NDArray decayMask, double gradScale, double lr, long step) {
        if (parts.size() == 1 || !parts.stream().allMatch(FlatAdamW::inOnePass)) {
            FlatOptimizer.super.step(parts, grads, decayMask, gradScale, lr, step);
            return;
        }
        if (expAvg == null) { // over all the parts, where the masters live (grads are the step's)
            ai.djl.ndarray.NDManager home = parts.get(0).getManager();
            expAvg = home.zeros(grads.getShape(), grads.getDataType());
            expAvgSq = home.zeros(grads.getShape(), grads.getDataType());
        }
        long at = 0;
        for (NDArray p : parts) {
            NDIndex range = new NDIndex("{}:{}", at, at + p.getShape().size());
            try (NDArray g = grads.get(range); NDArray m1 = expAvg.get(range); NDArray m2 = expAvgSq.get(range);
                    NDArray mask = decayMask.get(range)) {
                TorchNative.adamwInPlace(p, g, m1, m2, mask, (float) gradScale, lr, beta1, beta2, eps, weightDecay, step);
            }
            at += p.getShape().size();
        }
    }

    private static boolean inOnePass(NDArray masters) {
        return TorchNative.isAvailable() && masters.getDevice().equals(ai.djl.Device.cpu())
                && masters.getDataType() == ai.djl.ndarray.types.DataType.FLOAT32;
    }

    @Override
    public Map<String, NDArray> state() {
        Map<String, NDArray> s = new LinkedHashMap<>();
        if (expAvg != null) {
            s.put("exp_avg", expAvg);
            s.put("exp_avg_sq", expAvgSq);
        }
        return s;
    }

    @Override
    public void loadState(Map<String, NDArray> state) {
        expAvg = state.get("exp_avg");
        expAvgSq = state.get("exp_avg_sq");
    }

    @Override
    public long stateBytes() {
        return expAvg == null ? 0 : 2 * expAvg.getShape().size() * 4;
    }
}
