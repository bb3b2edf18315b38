package org.djlmegatron.check;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** Needs a CUDA device and NCCL: excluded from the default build (tag gpu). */
@Tag("gpu")
class NcclGpuCheckTest {

    @Test
    void collectivesOnModelTensorsEqualTheirInputsThroughRealNccl() {
        assertThat(NcclGpuCheck.run()).startsWith("NCCL GPU check: OK");
    }
}
