package org.djlmegatron.pipeline;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The replay on one device per stage against Megatron's bubble arithmetic. */
class PipelineReplayTest {

    /** Every rank's schedule, each forward taking {@code f} and each backward {@code b} seconds. */
    private static PipelineReplay uniform(int p, int v, int m, double f, double b) {
        List<PipelineSchedule> schedules = new ArrayList<>();
        double[][] seconds = new double[p][];
        for (int r = 0; r < p; r++) {
            PipelineSchedule s = PipelineSchedule.training(p, r, v, m);
            schedules.add(s);
            seconds[r] = s.steps().stream().mapToDouble(step -> step.forward() ? f : b).toArray();
        }
        return PipelineReplay.of(schedules, seconds);
    }

    @Test
    void oneFOneBWithEqualPassesHasMegatronsBubble() {
        for (int p : new int[] {2, 4}) {
            for (int m : new int[] {4, 8, 16}) {
                PipelineReplay r = uniform(p, 1, m, 1, 2);
                // rank 0 waits (p - 1) forwards at the start and (p - 1) backwards at the end
                assertThat(r.makespan()).as("p %d m %d", p, m).isEqualTo((m + p - 1) * 3.0);
                for (int rank = 0; rank < p; rank++) {
                    assertThat(r.bubble(rank)).as("p %d m %d rank %d", p, m, rank).isEqualTo((p - 1) / (double) m);
                }
            }
        }
    }

    /** Interleaved: each chunk does 1/v of the stage's work, so the bubble shrinks v times. */
    @Test
    void interleavedWithEqualPassesHasMegatronsBubble() {
        for (int[] c : new int[][] {{2, 2, 4}, {2, 2, 8}, {4, 2, 8}, {2, 4, 8}}) {
            int p = c[0];
            int v = c[1];
            int m = c[2];
            PipelineReplay r = uniform(p, v, m, 1.0 / v, 2.0 / v);
            assertThat(r.bubble(0)).as("p %d v %d m %d", p, v, m).isCloseTo((p - 1) / (double) (v * m), within(1e-12));
        }
    }

    @Test
    void aSlowStageIdlesTheOthers() {
        // PP2, 4 micro-batches, the last stage twice as slow: rank 0 waits for it
        List<PipelineSchedule> s = List.of(PipelineSchedule.training(2, 0, 1, 4), PipelineSchedule.training(2, 1, 1, 4));
        double[][] seconds = new double[2][];
        for (int r = 0; r < 2; r++) {
            int k = r + 1;
            seconds[r] = s.get(r).steps().stream().mapToDouble(step -> k * (step.forward() ? 1 : 2)).toArray();
        }
        PipelineReplay replay = PipelineReplay.of(s, seconds);
        // rank 1: F0 can start at 1, then its 4 forwards and 4 backwards back to back (24 s); rank 0's last B3 after
        assertThat(replay.busy(1)).isEqualTo(24);
        assertThat(replay.makespan()).isEqualTo(1 + 24 + 2);
        assertThat(replay.bubble(0)).isEqualTo((27 - 12) / 12.0);
    }
}
