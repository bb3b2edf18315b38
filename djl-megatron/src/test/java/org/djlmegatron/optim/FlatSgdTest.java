package org.djlmegatron.optim;

import static org.assertj.core.api.Assertions.assertThat;
import static org.djlmegatron.optim.FlatAdamWTest.MASK;
import static org.djlmegatron.optim.FlatAdamWTest.P0;
import static org.djlmegatron.optim.FlatAdamWTest.assertClose;
import static org.djlmegatron.optim.FlatAdamWTest.grad;
import static org.djlmegatron.optim.FlatAdamWTest.lr;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * {@link FlatSgd} against a double-precision reference of {@code torch.optim.SGD} (what Megatron's
 * {@code --optimizer sgd} uses): {@code g += wd*p} where the mask is 1, then the momentum buffer
 * (first step: g; then {@code mu*buf + g}, dampening 0) and {@code p -= lr*buf}.
 */
class FlatSgdTest {

    private NDManager manager;

    @BeforeEach
    void open() {
        manager = NDManager.newBaseManager();
    }

    @AfterEach
    void close() {
        manager.close();
    }

    private NDArray owned(float[] v) {
        return manager.create(v).duplicate();
    }

    private static double[] reference(double momentum, double wd, int steps) {
        double[] p = new double[P0.length];
        for (int i = 0; i < p.length; i++) {
            p[i] = P0[i];
        }
        double[] buf = null;
        for (int s = 1; s <= steps; s++) {
            float[] g0 = grad(s);
            double lr = lr(s);
            double[] g = new double[p.length];
            for (int i = 0; i < p.length; i++) {
                g[i] = g0[i] + (MASK[i] != 0 ? wd * p[i] : 0); // torch's coupled L2 decay
            }
            double[] dir = g;
            if (momentum != 0) {
                if (buf == null) {
                    buf = g.clone();
                } else {
                    for (int i = 0; i < p.length; i++) {
                        buf[i] = momentum * buf[i] + g[i];
                    }
                }
                dir = buf;
            }
            for (int i = 0; i < p.length; i++) {
                p[i] -= lr * dir[i];
            }
        }
        return p;
    }

    @Test
    void severalStepsMatchTheReference() {
        double[][] settings = {{0.0, 0.0}, {0.0, 0.1}, {0.9, 0.0}, {0.9, 0.05}, {0.5, 1.0}};
        for (double[] c : settings) {
            FlatSgd opt = new FlatSgd(c[0], c[1]);
            NDArray masters = owned(P0);
            NDArray mask = owned(MASK);
            for (int s = 1; s <= 5; s++) {
                try (NDArray grads = owned(grad(s))) {
                    opt.step(masters, grads, mask, lr(s), s);
                }
                assertClose(masters.toFloatArray(), reference(c[0], c[1], s),
                        "momentum " + c[0] + " wd " + c[1] + " step " + s);
            }
        }
    }

    @Test
    void stepDoesNotModifyOrKeepTheCallersGradient() {
        FlatSgd opt = new FlatSgd(0.9, 0.0);
        NDArray masters = owned(P0);
        NDArray mask = owned(MASK);
        float[] g1 = grad(1);
        NDArray grads = owned(g1);
        opt.step(masters, grads, mask, 0.1, 1);
        opt.step(masters, owned(grad(2)), mask, 0.1, 2); // momentum buffer must not alias grads
        assertThat(grads.toFloatArray()).containsExactly(g1);
    }

    @Test
    void stateRoundTripContinuesIdentically() {
        FlatSgd a = new FlatSgd(0.9, 0.01);
        NDArray mask = owned(MASK);
        NDArray pa = owned(P0);
        for (int s = 1; s <= 2; s++) {
            a.step(pa, owned(grad(s)), mask, lr(s), s);
        }
        Map<String, NDArray> saved = new LinkedHashMap<>();
        a.state().forEach((k, v) -> saved.put(k, v.duplicate()));
        assertThat(saved.keySet()).containsExactly("momentum_buffer");
        NDArray pb = pa.duplicate();
        FlatSgd b = new FlatSgd(0.9, 0.01);
        b.loadState(saved);
        for (int s = 3; s <= 5; s++) {
            a.step(pa, owned(grad(s)), mask, lr(s), s);
            b.step(pb, owned(grad(s)), mask, lr(s), s);
            assertThat(pb.toFloatArray()).as("params after step %d", s).containsExactly(pa.toFloatArray());
        }
        assertClose(pb.toFloatArray(), reference(0.9, 0.01, 5), "resumed params");
    }

    @Test
    void stateBytes() {
        FlatSgd plain = new FlatSgd(0.0, 0.1);
        NDArray masters = owned(new float[250]);
        NDArray ones = manager.ones(masters.getShape());
        plain.step(masters, ones, ones, 0.1, 1);
        assertThat(plain.stateBytes()).isZero();
        assertThat(plain.state()).isEmpty();

        FlatSgd withMomentum = new FlatSgd(0.9, 0.0);
        assertThat(withMomentum.stateBytes()).isZero();
        withMomentum.step(masters, ones, ones, 0.1, 1);
        assertThat(withMomentum.stateBytes()).isEqualTo(250L * 4);
    }
}
