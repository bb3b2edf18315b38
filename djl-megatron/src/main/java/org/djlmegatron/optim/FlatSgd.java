package org.djlmegatron.optim;

import ai.djl.ndarray.NDArray;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * SGD as {@code torch.optim.SGD}, which Megatron's {@code --optimizer sgd} uses: L2 weight decay
 * added to the gradient ({@code g + wd*p}, where decay applies), momentum with dampening 0.
 */
public final class FlatSgd implements FlatOptimizer {

    private final double momentum;
    private final double weightDecay;
    private NDArray velocity;

    public FlatSgd(double momentum, double weightDecay) {
        this.momentum = momentum;
        this.weightDecay = weightDecay;
    }

    @Override
    public void step(NDArray masters, NDArray grads, NDArray decayMask, double lr, long step) {
        try (NDArray decay = masters.mul(decayMask).muli((float) weightDecay);
                NDArray g = grads.add(decay)) {
            NDArray direction = g;
            if (momentum != 0) {
                if (velocity == null) {
                    velocity = g.duplicate();
                } else {
                    velocity.muli((float) momentum).addi(g);
                }
                direction = velocity;
            }
            try (NDArray update = direction.mul((float) -lr)) {
                masters.addi(update);
            }
        }
    }
    @Override
    public Map<String, NDArray> state() {
        Map<String, NDArray> s = new LinkedHashMap<>();
        if (velocity != null) {
            s.put("momentum_buffer", velocity);
        }
        return s;
    }

    @Override
    public void loadState(Map<String, NDArray> state) {
        velocity = state.get("momentum_buffer");
    }

    @Override
    public long stateBytes() {
        return velocity == null ? 0 : velocity.getShape().size() * 4;
    }
}
