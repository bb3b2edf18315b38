package org.djlmegatron.optim;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** {@link FlatAdamW} against a double-precision transcription of {@code torch.optim.AdamW}. */
class FlatAdamWTest {

    static final float[] P0 = {0.5f, -1.25f, 2.0f, 0.0f, -0.3f, 1.5f, 0.75f};
    static final float[] MASK = {1, 1, 0, 1, 0, 1, 1};

    private NDManager manager;

    @BeforeEach
    void open() {
        manager = NDManager.newBaseManager();
    }

    @AfterEach
    void close() {
        manager.close();
    }

    /** Gradient of step {@code s} (1-based): varied signs and magnitudes, one exact zero. */
    static float[] grad(int s) {
        float[] g = new float[P0.length];
        for (int i = 0; i < g.length; i++) {
            g[i] = (float) (Math.sin(1.3 * i + 0.7 * s) * (1 + i % 3) * (s % 2 == 0 ? 0.1 : 1.0));
        }
        g[3] = s == 2 ? 0f : g[3];
        return g;
    }

    static double lr(int s) {
        return 1e-2 * (1.0 - 0.1 * s);
    }

    /** torch.optim.AdamW (single-tensor, no amsgrad, maximize false), in doubles. */
    static final class Reference {
        final double b1;
        final double b2;
        final double eps;
        final double wd;
        final double[] p;
        final double[] m;
        final double[] v;

        Reference(double b1, double b2, double eps, double wd, float[] p0) {
            this.b1 = b1;
            this.b2 = b2;
            this.eps = eps;
            this.wd = wd;
            p = new double[p0.length];
            for (int i = 0; i < p.length; i++) {
                p[i] = p0[i];
            }
            m = new double[p.length];
            v = new double[p.length];
        }

        void step(float[] g, float[] mask, double lr, long t) {
            double bc1 = 1 - Math.pow(b1, t);
            double bc2 = 1 - Math.pow(b2, t);
            for (int i = 0; i < p.length; i++) {
                if (mask[i] != 0) {
                    p[i] *= 1 - lr * wd;
                }
                m[i] = b1 * m[i] + (1 - b1) * g[i];
                v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
                double denom = Math.sqrt(v[i]) / Math.sqrt(bc2) + eps;
                p[i] -= lr / bc1 * m[i] / denom;
            }
        }
    }

    private NDArray owned(float[] v) {
        return manager.create(v).duplicate();
    }

    static void assertClose(float[] actual, double[] expected, String what) {
        assertThat(actual).hasSize(expected.length);
        for (int i = 0; i < expected.length; i++) {
            assertThat((double) actual[i]).as("%s[%d]", what, i)
                    .isCloseTo(expected[i], within(1e-6 * Math.max(1.0, Math.abs(expected[i]))));
        }
    }

    @Test
    void severalStepsMatchTorchAdamW() {
        double[][] settings = {{0.9, 0.999, 1e-8, 0.1}, {0.8, 0.95, 1e-6, 0.0}, {0.9, 0.98, 1e-3, 0.5}};
        for (double[] c : settings) {
            FlatAdamW opt = new FlatAdamW(c[0], c[1], c[2], c[3]);
            Reference ref = new Reference(c[0], c[1], c[2], c[3], P0);
            NDArray masters = owned(P0);
            NDArray mask = owned(MASK);
            for (int s = 1; s <= 6; s++) {
                float[] g = grad(s);
                try (NDArray grads = owned(g)) {
                    opt.step(masters, grads, mask, lr(s), s);
                }
                ref.step(g, MASK, lr(s), s);
                assertClose(masters.toFloatArray(), ref.p, "betas/eps/wd " + java.util.Arrays.toString(c)
                        + " step " + s + " params");
                assertClose(opt.state().get("exp_avg").toFloatArray(), ref.m, "exp_avg step " + s);
                assertClose(opt.state().get("exp_avg_sq").toFloatArray(), ref.v, "exp_avg_sq step " + s);
            }
        }
    }

    @Test
    void weightDecayOnlyWhereTheMaskIsOne() {
        // zero gradients: only the decay moves the weights (m = v = 0, update 0/eps = 0)
        FlatAdamW opt = new FlatAdamW(0.9, 0.999, 1e-8, 0.25);
        NDArray masters = owned(P0);
        try (NDArray grads = manager.zeros(masters.getShape()); NDArray mask = owned(MASK)) {
            opt.step(masters, grads, mask, 0.1, 1);
        }
        float[] p = masters.toFloatArray();
        for (int i = 0; i < P0.length; i++) {
            double expected = MASK[i] != 0 ? P0[i] * (1 - 0.1 * 0.25) : P0[i];
            assertThat((double) p[i]).as("param %d (mask %s)", i, MASK[i]).isCloseTo(expected, within(1e-7));
        }
    }

    @Test
    void firstStepMovesEveryWeightByAboutLrAgainstItsGradient() {
        FlatAdamW opt = new FlatAdamW(0.9, 0.999, 1e-8, 0.0);
        NDArray masters = owned(P0);
        float[] g = grad(1);
        try (NDArray grads = owned(g); NDArray mask = owned(MASK)) {
            opt.step(masters, grads, mask, 0.01, 1);
        }
        float[] p = masters.toFloatArray();
        for (int i = 0; i < P0.length; i++) {
            assertThat((double) (p[i] - P0[i])).as("param %d", i)
                    .isCloseTo(-0.01 * Math.signum(g[i]), within(1e-6));
        }
    }

    @Test
    void stateRoundTripContinuesIdentically() {
        FlatAdamW a = new FlatAdamW(0.9, 0.95, 1e-8, 0.1);
        NDArray mask = owned(MASK);
        NDArray pa = owned(P0);
        for (int s = 1; s <= 3; s++) {
            try (NDArray grads = owned(grad(s))) {
                a.step(pa, grads, mask, lr(s), s);
            }
        }
        // what a checkpoint would hold: copies of the state and of the masters
        Map<String, NDArray> saved = new LinkedHashMap<>();
        a.state().forEach((k, v) -> saved.put(k, v.duplicate()));
        assertThat(saved.keySet()).containsExactly("exp_avg", "exp_avg_sq");
        NDArray pb = pa.duplicate();

        FlatAdamW b = new FlatAdamW(0.9, 0.95, 1e-8, 0.1);
        assertThat(b.state()).isEmpty();
        b.loadState(saved);
        for (int s = 4; s <= 6; s++) {
            try (NDArray ga = owned(grad(s)); NDArray gb = owned(grad(s))) {
                a.step(pa, ga, mask, lr(s), s);
                b.step(pb, gb, mask, lr(s), s);
            }
            assertThat(pb.toFloatArray()).as("params after step %d", s).containsExactly(pa.toFloatArray());
            assertThat(b.state().get("exp_avg").toFloatArray()).containsExactly(a.state().get("exp_avg").toFloatArray());
            assertThat(b.state().get("exp_avg_sq").toFloatArray())
                    .containsExactly(a.state().get("exp_avg_sq").toFloatArray());
        }
    }

    @Test
    void stateBytesAreTwoFp32MomentsOnceStepped() {
        FlatAdamW opt = new FlatAdamW(0.9, 0.999, 1e-8, 0.0);
        assertThat(opt.stateBytes()).isZero();
        assertThat(opt.state()).isEmpty();
        NDArray masters = owned(new float[1000]);
        try (NDArray grads = manager.ones(masters.getShape()); NDArray mask = manager.ones(masters.getShape())) {
            opt.step(masters, grads, mask, 1e-3, 1);
        }
        assertThat(opt.stateBytes()).isEqualTo(2L * 1000 * 4);
        assertThat(opt.state().get("exp_avg").getShape().size()).isEqualTo(1000);
    }
}
