package org.djlmegatron.training;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/** {@link LossScaler} against Megatron's {@code DynamicGradScaler} and {@code ConstantGradScaler}. */
class LossScalerTest {

    @Test
    void noneIsOneAndNeverChanges() {
        LossScaler s = LossScaler.none();
        assertThat(s.isDynamic()).isFalse();
        assertThat(s.scale()).isEqualTo(1.0);
        for (int i = 0; i < 5000; i++) {
            s.update(i % 3 == 0);
        }
        assertThat(s.scale()).isEqualTo(1.0);
    }

    @Test
    void fixedNeverChanges() {
        LossScaler s = LossScaler.fixed(128);
        assertThat(s.isDynamic()).isFalse();
        assertThat(s.scale()).isEqualTo(128.0);
        for (int i = 0; i < 3000; i++) {
            s.update(i < 10);
        }
        assertThat(s.scale()).isEqualTo(128.0);
    }

    @Test
    void hysteresisDelaysTheFirstBackoff() {
        LossScaler s = LossScaler.dynamic(65536, 1, 1000, 2);
        assertThat(s.isDynamic()).isTrue();
        assertThat(s.scale()).isEqualTo(65536.0);
        s.update(true); // first overflow: hysteresis 2 -> 1, no backoff yet
        assertThat(s.scale()).isEqualTo(65536.0);
        s.update(true); // second: 1 -> 0, back off
        assertThat(s.scale()).isEqualTo(32768.0);
        assertThat(s.state()).containsExactly(32768.0, 0.0, 0.0);
    }

    @Test
    void hysteresisStaysSpentAfterABackoffUntilTheNextGrowth() {
        LossScaler s = LossScaler.dynamic(1024, 1, 4, 3);
        s.update(true);
        s.update(true);
        assertThat(s.scale()).isEqualTo(1024.0);
        s.update(true); // hysteresis spent: 512
        assertThat(s.scale()).isEqualTo(512.0);
        // clean steps in between do not restore the hysteresis...
        s.update(false);
        s.update(false);
        s.update(false);
        assertThat(s.scale()).isEqualTo(512.0);
        // ...so the very next overflow backs off again (Megatron: the tracker is only reset on growth)
        s.update(true);
        assertThat(s.scale()).isEqualTo(256.0);
        s.update(true);
        assertThat(s.scale()).isEqualTo(128.0);
        assertThat(s.state()[2]).isLessThanOrEqualTo(0.0);
        // a full window of clean steps grows the scale and restores the hysteresis
        for (int i = 0; i < 4; i++) {
            s.update(false);
        }
        assertThat(s.scale()).isEqualTo(256.0);
        assertThat(s.state()).containsExactly(256.0, 0.0, 3.0);
        s.update(true);
        s.update(true);
        assertThat(s.scale()).as("hysteresis 3 absorbs two overflows again").isEqualTo(256.0);
        s.update(true);
        assertThat(s.scale()).isEqualTo(128.0);
    }

    @Test
    void backoffStopsAtTheMinimum() {
        LossScaler s = LossScaler.dynamic(16, 2, 1000, 1);
        s.update(true);
        assertThat(s.scale()).isEqualTo(8.0);
        s.update(true);
        s.update(true);
        assertThat(s.scale()).isEqualTo(2.0);
        for (int i = 0; i < 10; i++) {
            s.update(true);
        }
        assertThat(s.scale()).isEqualTo(2.0);
    }

    @Test
    void growsAfterEachFullWindowOfCleanSteps() {
        LossScaler s = LossScaler.dynamic(4, 1, 5, 2);
        for (int i = 0; i < 4; i++) {
            s.update(false);
        }
        assertThat(s.scale()).isEqualTo(4.0);
        s.update(false); // 5th clean step in a row
        assertThat(s.scale()).isEqualTo(8.0);
        for (int i = 0; i < 5; i++) {
            s.update(false);
        }
        assertThat(s.scale()).isEqualTo(16.0);
    }

    @Test
    void anOverflowRestartsTheGrowthWindow() {
        LossScaler s = LossScaler.dynamic(4, 1, 5, 2);
        for (int i = 0; i < 4; i++) {
            s.update(false);
        }
        s.update(true); // hysteresis absorbs it, but the clean-step count restarts
        assertThat(s.scale()).isEqualTo(4.0);
        for (int i = 0; i < 4; i++) {
            s.update(false);
        }
        assertThat(s.scale()).isEqualTo(4.0);
        s.update(false);
        assertThat(s.scale()).isEqualTo(8.0);
    }

    @Test
    void stateRoundTripContinuesIdentically() {
        LossScaler a = LossScaler.dynamic(1 << 20, 1, 3, 2);
        boolean[] history = {true, false, false, true, true, false};
        for (boolean inf : history) {
            a.update(inf);
        }
        double[] saved = a.state();
        // two backoffs (the hysteresis tracker runs negative, as in Megatron), then one clean step
        assertThat(saved).containsExactly(262144.0, 1.0, -1.0);

        LossScaler b = LossScaler.dynamic(1, 1, 3, 2);
        b.loadState(saved.clone());
        assertThat(b.scale()).isEqualTo(a.scale());
        boolean[] future = {false, false, true, false, false, false, true, true, false};
        for (boolean inf : future) {
            a.update(inf);
            b.update(inf);
            assertThat(b.state()).containsExactly(a.state());
        }
        // the state is a copy: changing it does not touch the scaler
        double[] s = a.state();
        s[0] = 7;
        assertThat(a.scale()).isNotEqualTo(7.0);
    }
}
