package org.djlmegatron.training;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.djlmegatron.optim.FlatAdamW;
import org.djlmegatron.optim.LearningRateSchedule;
import org.junit.jupiter.api.Test;

class TrainerConfigTest {

    @Test
    void builderHasMegatronsDefaults() {
        StepConfig c = StepConfig.builder(4, LearningRateSchedule.constant(1e-3)).build();
        assertThat(c.microBatchSize()).isEqualTo(4);
        assertThat(c.globalBatchSize()).isEqualTo(4);
        assertThat(c.clipGrad()).isEqualTo(1.0);
        assertThat(c.distributedOptimizer()).isFalse();
        assertThat(c.bucketElements()).isEqualTo(40_000_000L);
        assertThat(c.optimizer().get()).isInstanceOf(FlatAdamW.class);
        assertThat(c.scaler().get().isDynamic()).isFalse();
        assertThat(c.scaler().get().scale()).isEqualTo(1.0);
    }

    @Test
    void globalBatchMustBeAMultipleOfMicroTimesDp() {
        StepConfig c = StepConfig.builder(2, LearningRateSchedule.constant(1e-3)).globalBatchSize(8).build();
        assertThat(c.microBatchesPerStep(2)).isEqualTo(2);
        assertThatThrownBy(() -> c.microBatchesPerStep(3)).hasMessageContaining("not divisible by micro batch size 2");
    }
}
