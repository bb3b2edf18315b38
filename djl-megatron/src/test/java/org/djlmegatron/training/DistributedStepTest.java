package org.djlmegatron.training;

import org.djlmegatron.training.model.TrainableModel;
import org.djlmegatron.training.model.MicroBatch;
import org.djlmegatron.training.model.TrainableParameter;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Supplier;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.optim.FlatAdamW;
import org.djlmegatron.optim.FlatOptimizer;
import org.djlmegatron.optim.FlatSgd;
import org.djlmegatron.optim.LearningRateSchedule;
import org.djlmegatron.optim.LearningRateSchedule.AnnealStyle;
import org.djlmegatron.optim.LearningRateSchedule.DecayStyle;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankGrid;
import org.junit.jupiter.api.Test;

/**
 * The {@link DistributedStep} on a toy linear model {@code y = x W^T + b} (W [3,4] with weight decay,
 * b [3] without) with a mean-squared-error loss, against gradients and updates computed by hand in
 * doubles, and against itself under accumulation, data parallelism, buckets and overflows.
 */
class DistributedStepTest {

    private static final Duration TIMEOUT = Duration.ofSeconds(60);
    private static final int IN = 4;
    private static final int OUT = 3;
    private static final int N = OUT * IN + OUT;
    private static final float[] W0 = {0.1f, -0.2f, 0.3f, 0.05f, -0.15f, 0.25f, 0.0f, 0.2f, 0.3f, 0.1f, -0.1f, -0.25f};
    private static final float[] B0 = {0.05f, -0.1f, 0.2f};

    private static final double MAX_LR = 0.05;
    private static final double MIN_LR = 0.005;
    private static final LearningRateSchedule SCHEDULE =
            new LearningRateSchedule(MAX_LR, MIN_LR, 0, 10, DecayStyle.LINEAR, 0, AnnealStyle.LINEAR);

    /** Linear decay from 0.05 to 0.005 over 10 updates, no warmup (independent of the schedule class). */
    private static double lr(long update) {
        return MIN_LR + (1.0 - update / 10.0) * (MAX_LR - MIN_LR);
    }

    // ---------------------------------------------------------------- the toy model and its data

    /** y = x W^T + b; loss = mean over rows and outputs of (y - target)^2. */
    static final class ToyLinear implements TrainableModel {
        final NDArray w;
        final NDArray b;
        private final Set<Integer> infOnSteps;
        private int steps;

        ToyLinear(NDManager m, Set<Integer> infOnSteps) {
            w = m.create(W0, new Shape(OUT, IN)).duplicate(); // libtorch-owned
            b = m.create(B0, new Shape(OUT)).duplicate();
            w.setRequiresGradient(true);
            b.setRequiresGradient(true);
            this.infOnSteps = infOnSteps;
        }

        @Override
        public List<TrainableParameter> trainableParameters() {
            return List.of(new TrainableParameter("weight", w, false, true),
                    new TrainableParameter("bias", b, false, false));
        }

        @Override
        public NDArray loss(NDArray inputs, NDArray labels) {
            NDManager m = inputs.getManager();
            NDArray x = inputs.toType(DataType.FLOAT32, false); // [rows, 4], no gradient needed
            NDArray target;
            try (NDArray y = labels.get(new NDIndex(":, 0:3"))) {
                target = y.toType(DataType.FLOAT32, false); // [rows, 3]
            }
            NDArray wt = w.transpose();
            wt.attach(m);
            NDArray pred = x.matMul(wt).add(b);
            NDArray diff = pred.sub(target);
            return diff.square().mean(); // NDArray-NDArray ops only
        }

        /** Counts steps; on the chosen ones writes +inf into one weight gradient. */
        @Override
        public void reduceTensorParallelGradients() {
            steps++;
            if (infOnSteps.contains(steps)) {
                float[] bad = new float[OUT * IN];
                bad[6] = Float.POSITIVE_INFINITY; // W[1,2]
                try (NDArray g = w.getGradient(); NDArray add = w.getManager().create(bad, new Shape(OUT, IN))) {
                    g.addi(add);
                }
            }
        }

        float[] params() {
            float[] p = new float[N];
            System.arraycopy(w.toFloatArray(), 0, p, 0, OUT * IN);
            System.arraycopy(b.toFloatArray(), 0, p, OUT * IN, OUT);
            return p;
        }
    }

    /** Inputs of row {@code r} of the global batch of data step {@code s}: small integers in [-1, 3]. */
    private static long[] x(int s, int r) {
        long[] x = new long[IN];
        for (int k = 0; k < IN; k++) {
            x[k] = Math.floorMod(s * 7 + r * 5 + k * 3 + k * k, 5) - 1;
        }
        return x;
    }

    /** Targets of that row (the label tensor has a 4th, unused column). */
    private static long[] y(int s, int r) {
        long[] y = new long[IN];
        for (int j = 0; j < OUT; j++) {
            y[j] = Math.floorMod(s + 2 * r + 3 * j, 4);
        }
        return y;
    }

    private static MicroBatch batch(int s, int firstRow, int rows) {
        long[] in = new long[rows * IN];
        long[] lab = new long[rows * IN];
        for (int i = 0; i < rows; i++) {
            System.arraycopy(x(s, firstRow + i), 0, in, i * IN, IN);
            System.arraycopy(y(s, firstRow + i), 0, lab, i * IN, IN);
        }
        return new MicroBatch(in, lab, rows, IN);
    }

    // ---------------------------------------------------------------- running the trainer

    record RankRun(List<StepResult> steps, List<float[]> params, long optimizerBytes, long updates, double scale) {}

    private static StepConfig config(int mbs, int gbs, Supplier<FlatOptimizer> opt, double clip, boolean distOpt,
            long bucket, Supplier<LossScaler> scaler) {
        return new StepConfig(mbs, gbs, opt, SCHEDULE, clip, distOpt, bucket, scaler);
    }

    private static StepConfig adam(int mbs, int gbs, boolean distOpt, long bucket) {
        return config(mbs, gbs, () -> new FlatAdamW(0.9, 0.999, 1e-8, 0.1), 1.0, distOpt, bucket, LossScaler::none);
    }

    /**
     * Trains on {@code world} ranks (tp 1, so DP = world), iteration i on the global batch of data
     * step {@code dataSteps[i]}, rank r's micro-batches taking consecutive rows of it; {@code inf}
     * maps a rank to the steps on which its model injects +inf.
     */
    private static List<RankRun> train(int world, StepConfig cfg, int[] dataSteps, Map<Integer, Set<Integer>> inf) {
        return LocalWorld.run(RankGrid.create(world, 1, 1, 1, 1), TIMEOUT, ctx -> {
            ToyLinear model = new ToyLinear(ctx.manager(), inf.getOrDefault(ctx.rank(), Set.of()));
            ProcessGroup dp = ctx.group(GroupKind.DATA_CONTEXT);
            List<StepResult> results = new ArrayList<>();
            List<float[]> params = new ArrayList<>();
            try (DistributedStep trainer = new DistributedStep(ctx, model, cfg)) {
                int n = trainer.microBatchesPerStep();
                int mbs = cfg.microBatchSize();
                for (int s : dataSteps) {
                    List<MicroBatch> batches = new ArrayList<>();
                    for (int k = 0; k < n; k++) {
                        batches.add(batch(s, (dp.rank() * n + k) * mbs, mbs));
                    }
                    results.add(trainer.step(batches));
                    params.add(model.params());
                }
                return new RankRun(results, params, trainer.optimizerBytes(), trainer.updates(),
                        trainer.scaler().scale());
            }
        });
    }

    private static List<RankRun> train(int world, StepConfig cfg, int... dataSteps) {
        return train(world, cfg, dataSteps, Map.of());
    }

    // ---------------------------------------------------------------- the reference, in doubles

    /** Loss and gradient (W row-major, then b) of the mean squared error over {@code rows} rows of step s. */
    private static double[] lossAndGrad(double[] p, int s, int rows) {
        double[] out = new double[N + 1];
        double count = rows * OUT;
        for (int r = 0; r < rows; r++) {
            long[] x = x(s, r);
            long[] y = y(s, r);
            for (int j = 0; j < OUT; j++) {
                double pred = p[OUT * IN + j];
                for (int k = 0; k < IN; k++) {
                    pred += p[j * IN + k] * x[k];
                }
                double d = pred - y[j];
                out[0] += d * d / count;
                for (int k = 0; k < IN; k++) {
                    out[1 + j * IN + k] += 2 * d * x[k] / count;
                }
                out[1 + OUT * IN + j] += 2 * d / count;
            }
        }
        return out;
    }

    private static double[] initial() {
        double[] p = new double[N];
        for (int i = 0; i < OUT * IN; i++) {
            p[i] = W0[i];
        }
        for (int j = 0; j < OUT; j++) {
            p[OUT * IN + j] = B0[j];
        }
        return p;
    }

    private static double norm(double[] lossAndGrad) {
        double sq = 0;
        for (int i = 1; i <= N; i++) {
            sq += lossAndGrad[i] * lossAndGrad[i];
        }
        return Math.sqrt(sq);
    }

    private static void assertParams(float[] actual, double[] expected, double tol, String what) {
        for (int i = 0; i < N; i++) {
            assertThat((double) actual[i]).as("%s param %d", what, i).isCloseTo(expected[i], within(tol));
        }
    }

    private static void assertSameParams(List<RankRun> a, List<RankRun> b, double tol) {
        for (RankRun ra : a) {
            for (RankRun rb : b) {
                for (int i = 0; i < ra.params().size(); i++) {
                    float[] pa = ra.params().get(i);
                    float[] pb = rb.params().get(i);
                    for (int k = 0; k < N; k++) {
                        assertThat(pa[k]).as("iteration %d param %d", i + 1, k).isCloseTo(pb[k], within((float) tol));
                    }
                }
                for (int i = 0; i < ra.steps().size(); i++) {
                    StepResult sa = ra.steps().get(i);
                    StepResult sb = rb.steps().get(i);
                    assertThat(sa.loss()).as("loss %d", i + 1).isCloseTo(sb.loss(), within(tol * Math.max(1, sb.loss())));
                    assertThat(sa.gradNorm()).as("grad norm %d", i + 1)
                            .isCloseTo(sb.gradNorm(), within(tol * Math.max(1, sb.gradNorm())));
                    assertThat(sa.lr()).isEqualTo(sb.lr());
                    assertThat(sa.tokens()).isEqualTo(sb.tokens());
                }
            }
        }
    }

    // ---------------------------------------------------------------- (a) one step by hand

    @Test
    void adamWStepsEqualTheHandComputedReferenceWithClippingAndNoDecayOnTheBias() {
        double clip = 1.0;
        double wd = 0.1;
        double b1 = 0.9;
        double b2 = 0.999;
        double eps = 1e-8;
        List<RankRun> run = train(1, config(2, 2, () -> new FlatAdamW(b1, b2, eps, wd), clip, false,
                StepConfig.DEFAULT_BUCKET_ELEMENTS, LossScaler::none), 1, 2, 3, 4);
        RankRun r = run.get(0);

        double[] p = initial();
        double[] m = new double[N];
        double[] v = new double[N];
        boolean clipped = false;
        for (int t = 1; t <= 4; t++) {
            double[] lg = lossAndGrad(p, t, 2);
            double norm = norm(lg);
            double coeff = clip / (norm + 1e-6);
            clipped |= coeff < 1;
            double[] g = new double[N];
            for (int i = 0; i < N; i++) {
                g[i] = lg[i + 1] * Math.min(1.0, coeff);
            }
            double lr = lr(t - 1);
            for (int i = 0; i < N; i++) {
                if (i < OUT * IN) { // decay on the 2-D weight only
                    p[i] *= 1 - lr * wd;
                }
                m[i] = b1 * m[i] + (1 - b1) * g[i];
                v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
                double denom = Math.sqrt(v[i]) / Math.sqrt(1 - Math.pow(b2, t)) + eps;
                p[i] -= lr / (1 - Math.pow(b1, t)) * m[i] / denom;
            }
            StepResult s = r.steps().get(t - 1);
            assertThat(s.iteration()).isEqualTo(t);
            assertThat(s.skipped()).isFalse();
            assertThat(s.loss()).as("loss %d (before the update)", t).isCloseTo(lg[0], within(1e-5 * lg[0]));
            assertThat(s.gradNorm()).as("pre-clip grad norm %d", t).isCloseTo(norm, within(1e-5 * norm));
            assertThat(s.lr()).as("lr %d", t).isCloseTo(lr, within(1e-12));
            assertThat(s.lossScale()).isEqualTo(1.0);
            assertThat(s.tokens()).isEqualTo(2L * IN);
            assertParams(r.params().get(t - 1), p, 1e-5, "after step " + t);
        }
        assertThat(clipped).as("the test exercises clipping").isTrue();
        assertThat(r.updates()).isEqualTo(4);
    }

    @Test
    void sgdUpdateUsesTheClippedGradientAndReportsTheUnclippedNorm() {
        double clip = 0.5;
        List<RankRun> run = train(1, config(2, 2, () -> new FlatSgd(0, 0), clip, false,
                StepConfig.DEFAULT_BUCKET_ELEMENTS, LossScaler::none), 1);
        double[] p = initial();
        double[] lg = lossAndGrad(p, 1, 2);
        double norm = norm(lg);
        assertThat(norm).as("the gradient is well above the clip").isGreaterThan(4 * clip);
        double coeff = clip / (norm + 1e-6);
        for (int i = 0; i < N; i++) {
            p[i] -= lr(0) * lg[i + 1] * coeff;
        }
        StepResult s = run.get(0).steps().get(0);
        assertThat(s.gradNorm()).isCloseTo(norm, within(1e-5 * norm));
        assertParams(run.get(0).params().get(0), p, 1e-6, "after one clipped SGD step");

        // without clipping the step is the full gradient
        List<RankRun> free = train(1, config(2, 2, () -> new FlatSgd(0, 0), 0, false,
                StepConfig.DEFAULT_BUCKET_ELEMENTS, LossScaler::none), 1);
        double[] q = initial();
        for (int i = 0; i < N; i++) {
            q[i] -= lr(0) * lg[i + 1];
        }
        assertThat(free.get(0).steps().get(0).gradNorm()).isCloseTo(norm, within(1e-5 * norm));
        assertParams(free.get(0).params().get(0), q, 1e-5, "after one unclipped SGD step");
    }

    // ---------------------------------------------------------------- (b) gradient accumulation

    @Test
    void twoMicroBatchesOfOneEqualOneMicroBatchOfTwo() {
        List<RankRun> accumulated = train(1, adam(1, 2, false, StepConfig.DEFAULT_BUCKET_ELEMENTS), 1, 2, 3, 4);
        List<RankRun> whole = train(1, adam(2, 2, false, StepConfig.DEFAULT_BUCKET_ELEMENTS), 1, 2, 3, 4);
        assertSameParams(accumulated, whole, 1e-6);
        assertThat(accumulated.get(0).steps().get(0).tokens()).isEqualTo(2L * IN);
    }

    // ---------------------------------------------------------------- (c) data parallelism

    @Test
    void dataParallelTwoEqualsOneRankWithBothRows() {
        List<RankRun> single = train(1, adam(2, 2, false, StepConfig.DEFAULT_BUCKET_ELEMENTS), 1, 2, 3, 4);
        List<RankRun> ddp = train(2, adam(1, 2, false, StepConfig.DEFAULT_BUCKET_ELEMENTS), 1, 2, 3, 4);
        List<RankRun> zero = train(2, adam(1, 2, true, StepConfig.DEFAULT_BUCKET_ELEMENTS), 1, 2, 3, 4);
        assertThat(ddp).hasSize(2);
        assertSameParams(ddp, single, 1e-6);
        assertSameParams(zero, single, 1e-6);
        // replicas stay bit-identical
        for (int i = 0; i < 4; i++) {
            assertThat(ddp.get(1).params().get(i)).containsExactly(ddp.get(0).params().get(i));
            assertThat(zero.get(1).params().get(i)).containsExactly(zero.get(0).params().get(i));
        }
        assertThat(ddp.get(0).steps().get(0).tokens()).isEqualTo(2L * IN);

        // 15 elements padded to 16: fp32 masters + 2 Adam moments = 12 bytes per element; in the native library's
        // contiguous buffers fp32 weights are their own masters: 8
        long perElement = org.djlmegatron.engine.TorchNative.isAvailable() ? 8 : 12;
        assertThat(single.get(0).optimizerBytes()).isEqualTo(15L * perElement);
        assertThat(ddp.get(0).optimizerBytes()).isEqualTo(16L * perElement);
        for (RankRun r : zero) {
            assertThat(r.optimizerBytes()).isEqualTo(8L * perElement);
        }
        assertThat((double) zero.get(0).optimizerBytes()).isLessThanOrEqualTo(0.55 * ddp.get(0).optimizerBytes());
    }

    // ---------------------------------------------------------------- (d) buckets

    @Test
    void tinyBucketsAreBitIdenticalToOneBucket() {
        List<RankRun> one = train(2, adam(1, 2, false, StepConfig.DEFAULT_BUCKET_ELEMENTS), 1, 2, 3);
        List<RankRun> tiny = train(2, adam(1, 2, false, 3), 1, 2, 3);
        for (int rank = 0; rank < 2; rank++) {
            for (int i = 0; i < 3; i++) {
                assertThat(tiny.get(rank).params().get(i)).as("rank %d iteration %d", rank, i + 1)
                        .containsExactly(one.get(rank).params().get(i));
                StepResult a = tiny.get(rank).steps().get(i);
                StepResult b = one.get(rank).steps().get(i);
                assertThat(a.loss()).isEqualTo(b.loss());
                assertThat(a.gradNorm()).isEqualTo(b.gradNorm());
            }
        }
    }

    // ---------------------------------------------------------------- (e) overflow

    private static StepConfig scaled(int mbs, int gbs, boolean distOpt) {
        return config(mbs, gbs, () -> new FlatAdamW(0.9, 0.999, 1e-8, 0.1), 1.0, distOpt,
                StepConfig.DEFAULT_BUCKET_ELEMENTS, () -> LossScaler.dynamic(1024, 1, 1000, 1));
    }

    @Test
    void anInfSkipsTheStepHalvesTheScaleAndHoldsTheSchedule() {
        List<RankRun> hit = train(1, scaled(2, 2, false), new int[] {1, 2, 3}, Map.of(0, Set.of(2)));
        List<RankRun> clean = train(1, scaled(2, 2, false), new int[] {1, 3}, Map.of());
        assertOverflowSkipped(hit, clean);
    }

    @Test
    void anInfOnOneDataParallelRankSkipsTheStepOnBoth() {
        for (boolean distOpt : new boolean[] {false, true}) {
            List<RankRun> hit = train(2, scaled(1, 2, distOpt), new int[] {1, 2, 3}, Map.of(1, Set.of(2)));
            List<RankRun> clean = train(2, scaled(1, 2, distOpt), new int[] {1, 3}, Map.of());
            assertOverflowSkipped(hit, clean);
        }
    }

    private static void assertOverflowSkipped(List<RankRun> hit, List<RankRun> clean) {
        for (int rank = 0; rank < hit.size(); rank++) {
            RankRun r = hit.get(rank);
            RankRun c = clean.get(rank);
            String who = "rank " + rank;
            List<StepResult> s = r.steps();
            assertThat(s.get(0).skipped()).as(who).isFalse();
            assertThat(s.get(1).skipped()).as("%s: the step with the inf", who).isTrue();
            assertThat(s.get(2).skipped()).as("%s: the next clean step", who).isFalse();
            assertThat(r.params().get(1)).as("%s: parameters unchanged by the skipped step", who)
                    .containsExactly(r.params().get(0));
            assertThat(s.get(0).lossScale()).isEqualTo(1024.0);
            assertThat(s.get(1).lossScale()).isEqualTo(1024.0);
            assertThat(s.get(2).lossScale()).as("%s: halved after the overflow (hysteresis 1)", who).isEqualTo(512.0);
            assertThat(r.scale()).isEqualTo(512.0);
            assertThat(s.get(1).lr()).isEqualTo(0.0);
            assertThat(s.get(1).loss()).as("%s: the skipped step still reports its loss", who).isFinite();
            assertThat(s.get(1).iteration()).isEqualTo(2);
            // the schedule did not advance: the next update uses the lr of update 1
            assertThat(s.get(2).lr()).isEqualTo(c.steps().get(1).lr());
            assertThat(s.get(2).lr()).isCloseTo(lr(1), within(1e-12));
            assertThat(r.updates()).isEqualTo(2);
            // and it is the update a run that never saw the bad batch makes
            assertThat(s.get(2).gradNorm()).isCloseTo(c.steps().get(1).gradNorm(), within(1e-6));
            assertThat(r.params().get(2)).as("%s: the clean step after the skip updates normally", who)
                    .containsExactly(c.params().get(1));
        }
    }

    // ---------------------------------------------------------------- (f) wrong input

    @Test
    void theWrongNumberOfMicroBatchesFailsClearly() {
        List<Boolean> ok = LocalWorld.run(RankGrid.single(), TIMEOUT, ctx -> {
            ToyLinear model = new ToyLinear(ctx.manager(), Set.of());
            try (DistributedStep trainer = new DistributedStep(ctx, model, adam(1, 2, false, StepConfig.DEFAULT_BUCKET_ELEMENTS))) {
                assertThat(trainer.microBatchesPerStep()).isEqualTo(2);
                float[] before = model.params();
                assertThatThrownBy(() -> trainer.step(List.of(batch(1, 0, 1))))
                        .isInstanceOf(IllegalArgumentException.class)
                        .hasMessage("rank 0 got 1 micro-batches, expected 2");
                assertThatThrownBy(() -> trainer.step(List.of(batch(1, 0, 1), batch(1, 1, 1), batch(1, 0, 1))))
                        .isInstanceOf(IllegalArgumentException.class)
                        .hasMessage("rank 0 got 3 micro-batches, expected 2");
                assertThat(model.params()).containsExactly(before);
                assertThat(trainer.iteration()).isZero();
                // still usable afterwards
                StepResult r = trainer.step(List.of(batch(1, 0, 1), batch(1, 1, 1)));
                assertThat(r.iteration()).isEqualTo(1);
                assertThat(r.skipped()).isFalse();
            }
            return true;
        });
        assertThat(ok).containsExactly(true);
    }

    @Test
    void batchSizesThatDoNotFitTheDataParallelSizeFailClearly() {
        List<Boolean> ok = LocalWorld.run(RankGrid.create(2, 1, 1, 1, 1), TIMEOUT, ctx -> {
            ToyLinear model = new ToyLinear(ctx.manager(), Set.of());
            assertThatThrownBy(() -> new DistributedStep(ctx, model, adam(1, 3, false, StepConfig.DEFAULT_BUCKET_ELEMENTS)))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessage("global batch size 3 is not divisible by micro batch size 1 x data-parallel size 2");
            return true;
        });
        assertThat(ok).containsExactly(true, true);
        assertThatThrownBy(() -> adam(2, 6, false, 1).microBatchesPerStep(2))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("global batch size 6 is not divisible by micro batch size 2 x data-parallel size 2");
        assertThat(adam(2, 8, false, 1).microBatchesPerStep(2)).isEqualTo(2);
    }
}
