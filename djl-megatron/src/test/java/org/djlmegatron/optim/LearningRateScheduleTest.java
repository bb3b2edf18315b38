package org.djlmegatron.optim;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import org.djlmegatron.optim.LearningRateSchedule.AnnealStyle;
import org.djlmegatron.optim.LearningRateSchedule.DecayStyle;
import org.junit.jupiter.api.Test;

/**
 * Megatron's {@code OptimizerParamScheduler.get_lr} (init_lr 0), re-derived here from its
 * formulas, against {@link LearningRateSchedule}.
 */
class LearningRateScheduleTest {

    private static final double EPS = 1e-15;

    /** Megatron-LM's get_lr, written out independently (num_steps = n, init_lr = 0). */
    private static double megatron(double max, double min, long warmup, long decay, DecayStyle style,
            long wsdDecay, AnnealStyle anneal, long n) {
        if (warmup > 0 && n <= warmup) {
            return max * (double) n / (double) warmup;
        }
        if (style == DecayStyle.CONSTANT) {
            return max;
        }
        if (n > decay) {
            return min;
        }
        if (style == DecayStyle.INVERSE_SQUARE_ROOT) {
            double w = Math.max(warmup, 1);
            double s = Math.max(n, 1);
            return Math.max(min, max * Math.pow(w, 0.5) / Math.pow(s, 0.5));
        }
        double ratio = (double) (n - warmup) / (double) (decay - warmup);
        double coeff;
        switch (style) {
            case LINEAR -> coeff = 1.0 - ratio;
            case COSINE -> coeff = 0.5 * (Math.cos(Math.PI * ratio) + 1.0);
            case WSD -> {
                long annealStart = decay - wsdDecay;
                if (n <= annealStart) {
                    coeff = 1.0;
                } else {
                    double r = (double) (n - annealStart) / (double) wsdDecay;
                    coeff = switch (anneal) {
                        case LINEAR -> 1.0 - r;
                        case COSINE -> 0.5 * (Math.cos(Math.PI * r) + 1.0);
                        case EXPONENTIAL -> 2.0 * Math.pow(0.5, r) - 1.0;
                        case MINUS_SQRT -> 1.0 - Math.sqrt(r);
                    };
                }
            }
            default -> throw new AssertionError(style);
        }
        return min + coeff * (max - min);
    }

    private static void assertMatchesMegatron(LearningRateSchedule s, long upTo) {
        for (long n = 0; n <= upTo; n++) {
            double expected = megatron(s.maxLr(), s.minLr(), s.warmupIters(), s.decayIters(), s.style(),
                    s.wsdDecayIters(), s.wsdStyle(), n);
            assertThat(s.lr(n)).as("%s lr(%d)", s, n).isCloseTo(expected, within(EPS));
        }
    }

    @Test
    void warmupIsLinearFromZeroAndReachesThePeakAtTheLastWarmupUpdate() {
        LearningRateSchedule s = new LearningRateSchedule(1e-3, 1e-5, 4, 20, DecayStyle.LINEAR, 0, AnnealStyle.LINEAR);
        assertThat(s.lr(0)).isEqualTo(0.0); // Megatron's first update has lr 0
        assertThat(s.lr(1)).isCloseTo(0.25e-3, within(EPS));
        assertThat(s.lr(2)).isCloseTo(0.5e-3, within(EPS));
        assertThat(s.lr(3)).isCloseTo(0.75e-3, within(EPS));
        assertThat(s.lr(4)).isCloseTo(1e-3, within(EPS)); // n == warmup is still warmup: max
        // just after warmup the decay has begun: ratio 1/16
        assertThat(s.lr(5)).isCloseTo(1e-5 + (1 - 1.0 / 16) * (1e-3 - 1e-5), within(EPS));
    }

    @Test
    void constantStaysAtThePeakForeverAfterWarmup() {
        LearningRateSchedule s = new LearningRateSchedule(2e-4, 0, 3, 10, DecayStyle.CONSTANT, 0, AnnealStyle.LINEAR);
        assertThat(s.lr(0)).isEqualTo(0.0);
        assertThat(s.lr(3)).isCloseTo(2e-4, within(EPS));
        assertThat(s.lr(4)).isEqualTo(2e-4);
        assertThat(s.lr(10)).isEqualTo(2e-4);
        assertThat(s.lr(1_000_000)).isEqualTo(2e-4); // constant ignores decay iters and min-lr
        assertMatchesMegatron(s, 30);

        LearningRateSchedule c = LearningRateSchedule.constant(0.1);
        for (long n : new long[] {0, 1, 2, 100, 1L << 40}) {
            assertThat(c.lr(n)).as("constant(0.1).lr(%d)", n).isEqualTo(0.1);
        }
    }

    @Test
    void linearDecaysFromMaxToMinAndThenStaysAtMin() {
        LearningRateSchedule s = new LearningRateSchedule(1.0, 0.1, 2, 12, DecayStyle.LINEAR, 0, AnnealStyle.LINEAR);
        assertThat(s.lr(2)).isCloseTo(1.0, within(EPS));
        assertThat(s.lr(7)).isCloseTo(0.1 + 0.5 * 0.9, within(EPS)); // half way
        assertThat(s.lr(11)).isCloseTo(0.1 + 0.1 * 0.9, within(EPS));
        assertThat(s.lr(12)).isCloseTo(0.1, within(EPS)); // n == decay iters: ratio 1
        assertThat(s.lr(13)).isEqualTo(0.1);
        assertThat(s.lr(500)).isEqualTo(0.1);
        assertMatchesMegatron(s, 40);
    }

    @Test
    void cosineFollowsHalfACosineToMin() {
        LearningRateSchedule s = new LearningRateSchedule(3e-4, 3e-5, 10, 110, DecayStyle.COSINE, 0, AnnealStyle.LINEAR);
        assertThat(s.lr(10)).isCloseTo(3e-4, within(EPS));
        assertThat(s.lr(35)).isCloseTo(3e-5 + 0.5 * (Math.cos(Math.PI * 0.25) + 1) * 2.7e-4, within(EPS));
        assertThat(s.lr(60)).isCloseTo(3e-5 + 0.5 * 2.7e-4, within(EPS)); // ratio 1/2: midpoint
        assertThat(s.lr(110)).isCloseTo(3e-5, within(EPS));
        assertThat(s.lr(111)).isEqualTo(3e-5);
        assertMatchesMegatron(s, 150);

        // without warmup the first update already has the peak
        LearningRateSchedule noWarmup = new LearningRateSchedule(1.0, 0, 0, 8, DecayStyle.COSINE, 0, AnnealStyle.LINEAR);
        assertThat(noWarmup.lr(0)).isEqualTo(1.0);
        assertThat(noWarmup.lr(4)).isCloseTo(0.5, within(EPS));
        assertMatchesMegatron(noWarmup, 20);
    }

    @Test
    void wsdHoldsThePeakThenAnnealsOverTheLastWsdIters() {
        for (AnnealStyle anneal : AnnealStyle.values()) {
            LearningRateSchedule s = new LearningRateSchedule(1.0, 0.2, 5, 45, DecayStyle.WSD, 8, anneal);
            assertThat(s.lr(5)).as("%s end of warmup", anneal).isCloseTo(1.0, within(EPS));
            assertThat(s.lr(20)).as("%s stable", anneal).isEqualTo(1.0);
            assertThat(s.lr(37)).as("%s anneal start (n == decay - wsd)", anneal).isEqualTo(1.0);
            assertThat(s.lr(45)).as("%s end of anneal reaches min-lr", anneal).isCloseTo(0.2, within(1e-12));
            assertThat(s.lr(46)).as("%s after decay iters", anneal).isEqualTo(0.2);
            assertMatchesMegatron(s, 60);
        }
    }

    @Test
    void wsdAnnealShapesAtAQuarterAndHalfWay() {
        double r = 0.25;
        double[][] expected = {
            {1 - r, 0.5}, // linear
            {0.5 * (Math.cos(Math.PI * r) + 1), 0.5}, // cosine
            {2 * Math.pow(0.5, r) - 1, 2 * Math.pow(0.5, 0.5) - 1}, // exponential
            {1 - Math.sqrt(r), 1 - Math.sqrt(0.5)}, // minus_sqrt
        };
        AnnealStyle[] styles = {AnnealStyle.LINEAR, AnnealStyle.COSINE, AnnealStyle.EXPONENTIAL, AnnealStyle.MINUS_SQRT};
        for (int i = 0; i < styles.length; i++) {
            LearningRateSchedule s = new LearningRateSchedule(1.0, 0.0, 0, 100, DecayStyle.WSD, 20, styles[i]);
            assertThat(s.lr(85)).as("%s at a quarter of the anneal", styles[i]).isCloseTo(expected[i][0], within(EPS));
            assertThat(s.lr(90)).as("%s half way through the anneal", styles[i]).isCloseTo(expected[i][1], within(EPS));
        }
    }

    @Test
    void exponentialWsdAnnealEndsAtMinLrWithoutAJump() {
        // Megatron: coeff = 2 * 0.5^r - 1, which is 0 at r = 1; the anneal must meet min-lr continuously
        LearningRateSchedule s = new LearningRateSchedule(1.0, 0.0, 0, 10, DecayStyle.WSD, 4, AnnealStyle.EXPONENTIAL);
        assertThat(s.lr(10)).isCloseTo(0.0, within(1e-12));
        assertThat(s.lr(9)).isCloseTo(2 * Math.pow(0.5, 0.75) - 1, within(EPS));
    }

    @Test
    void inverseSquareRootDecaysFromTheEndOfWarmupWithAFloor() {
        LearningRateSchedule s = new LearningRateSchedule(1.0, 0.1, 4, 1000, DecayStyle.INVERSE_SQUARE_ROOT, 0,
                AnnealStyle.LINEAR);
        assertThat(s.lr(0)).isEqualTo(0.0);
        assertThat(s.lr(4)).isCloseTo(1.0, within(EPS));
        assertThat(s.lr(16)).isCloseTo(0.5, within(EPS)); // sqrt(4/16)
        assertThat(s.lr(64)).isCloseTo(0.25, within(EPS));
        assertThat(s.lr(400)).isCloseTo(0.1, within(EPS)); // sqrt(4/400) = 0.1
        assertThat(s.lr(900)).isEqualTo(0.1); // floor
        assertMatchesMegatron(s, 1000);

        LearningRateSchedule noWarmup = new LearningRateSchedule(2.0, 0, 0, 100, DecayStyle.INVERSE_SQUARE_ROOT, 0,
                AnnealStyle.LINEAR);
        assertThat(noWarmup.lr(0)).isEqualTo(2.0); // max(n, 1) and max(warmup, 1)
        assertThat(noWarmup.lr(1)).isEqualTo(2.0);
        assertThat(noWarmup.lr(4)).isCloseTo(1.0, within(EPS));
        assertMatchesMegatron(noWarmup, 100);
    }

    @Test
    void inverseSquareRootGivesMinLrAfterDecayIters() {
        // Megatron checks num_steps > lr_decay_steps before the inverse-square-root branch
        LearningRateSchedule s = new LearningRateSchedule(1.0, 0.05, 1, 20, DecayStyle.INVERSE_SQUARE_ROOT, 0,
                AnnealStyle.LINEAR);
        assertThat(s.lr(20)).isCloseTo(Math.sqrt(1.0 / 20), within(EPS));
        assertThat(s.lr(21)).isEqualTo(0.05);
        assertThat(s.lr(100)).isEqualTo(0.05);
        assertMatchesMegatron(s, 60);
    }

    @Test
    void minLrFloorAfterDecayItersForEveryDecayingStyle() {
        for (DecayStyle style : new DecayStyle[] {DecayStyle.LINEAR, DecayStyle.COSINE, DecayStyle.WSD}) {
            LearningRateSchedule s = new LearningRateSchedule(0.5, 0.01, 3, 30, style, 10, AnnealStyle.COSINE);
            assertThat(s.lr(30)).as("%s at decay iters", style).isCloseTo(0.01, within(1e-12));
            for (long n : new long[] {31, 32, 100, 1L << 40}) {
                assertThat(s.lr(n)).as("%s lr(%d)", style, n).isEqualTo(0.01);
            }
            // monotone non-increasing after warmup
            for (long n = 3; n < 40; n++) {
                assertThat(s.lr(n + 1)).as("%s lr(%d) <= lr(%d)", style, n + 1, n).isLessThanOrEqualTo(s.lr(n) + EPS);
            }
        }
    }

    @Test
    void constructorRejectsBadLearningRates() {
        assertThatThrownBy(() -> new LearningRateSchedule(1.0, 2.0, 0, 10, DecayStyle.LINEAR, 0, AnnealStyle.LINEAR))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("need 0 <= min-lr <= lr, found lr=1.0 min-lr=2.0");
        assertThatThrownBy(() -> new LearningRateSchedule(-1.0, 0, 0, 10, DecayStyle.LINEAR, 0, AnnealStyle.LINEAR))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("need 0 <= min-lr <= lr, found lr=-1.0 min-lr=0.0");
        assertThatThrownBy(() -> new LearningRateSchedule(1.0, -0.5, 0, 10, DecayStyle.COSINE, 0, AnnealStyle.LINEAR))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("min-lr=-0.5");
    }

    @Test
    void constructorRejectsDecayItersNotBeyondWarmup() {
        assertThatThrownBy(() -> new LearningRateSchedule(1.0, 0, 5, 5, DecayStyle.LINEAR, 0, AnnealStyle.LINEAR))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("lr-decay-iters (5) must exceed lr-warmup-iters (5) for decay style LINEAR");
        assertThatThrownBy(() -> new LearningRateSchedule(1.0, 0, 10, 4, DecayStyle.COSINE, 0, AnnealStyle.LINEAR))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("lr-decay-iters (4) must exceed lr-warmup-iters (10) for decay style COSINE");
        assertThatThrownBy(() -> new LearningRateSchedule(1.0, 0, 3, 2, DecayStyle.WSD, 1, AnnealStyle.LINEAR))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("for decay style WSD");
        assertThatThrownBy(() -> new LearningRateSchedule(1.0, 0, -1, 10, DecayStyle.CONSTANT, 0, AnnealStyle.LINEAR))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("lr-warmup-iters (-1)");
        // constant needs no decay window
        assertThat(new LearningRateSchedule(1.0, 1.0, 5, 5, DecayStyle.CONSTANT, 0, AnnealStyle.LINEAR).lr(6))
                .isEqualTo(1.0);
    }
}
