package org.djlmegatron.check;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.List;
import org.djlmegatron.comm.RankDevices;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** {@code check-device}'s checks on the CPU, on the project's native library (libtorch's CPU bf16). */
@Tag("native")
class DeviceChecksTest {

    @Test
    void fusedAttentionAndBf16PassOnTheCpu() {
        List<DeviceChecks.Check> checks = DeviceChecks.run(RankDevices.cpu());
        assertThat(checks).hasSize(2);
        assertThat(checks).allSatisfy(c -> assertThat(c.passed()).as(c.toString()).isTrue());
    }
}
