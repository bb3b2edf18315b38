package org.djlmegatron.profile;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Self times from a chrome://tracing file: children's time is taken out of their parent's, per thread. */
class ProfileSummaryTest {

    // thread 1: linear [0, 100) holding matmul [10, 70) and add [70, 90); thread 2: another matmul [5, 45)
    private static final String EVENTS = "[{\"name\": \"aten::linear\", \"ph\": \"X\", \"ts\": 0, \"dur\": 100, \"tid\": 1},"
            + "{\"name\": \"aten::mm\", \"ph\": \"X\", \"ts\": 10, \"dur\": 60, \"tid\": 1},"
            + "{\"name\": \"aten::add\", \"ph\": \"X\", \"ts\": 70, \"dur\": 20, \"tid\": 1},"
            + "{\"name\": \"aten::mm\", \"ph\": \"X\", \"ts\": 5, \"dur\": 40, \"tid\": 2},"
            + "{\"name\": \"marker\", \"ph\": \"i\", \"ts\": 50, \"tid\": 1}]";

    @Test
    void selfTimeIsDurationLessChildrenOnTheSameThread(@TempDir Path tmp) throws IOException {
        Path trace = tmp.resolve("t.json");
        Files.writeString(trace, EVENTS);
        ProfileSummary s = ProfileSummary.read(trace);
        assertThat(s.rows()).extracting(ProfileSummary.Row::name).containsExactly("aten::mm", "aten::add", "aten::linear");
        assertThat(s.rows().get(0).selfMicros()).isCloseTo(100, within(1e-9)); // 60 + 40 on two threads
        assertThat(s.rows().get(0).calls()).isEqualTo(2);
        assertThat(s.rows().get(1).selfMicros()).isCloseTo(20, within(1e-9));
        assertThat(s.rows().get(2).selfMicros()).isCloseTo(20, within(1e-9)); // 100 - 60 - 20
        assertThat(s.totalMicros()).isCloseTo(140, within(1e-9));
        assertThat(s.table(1)).contains("0.1  71.4%       2  aten::mm").doesNotContain("aten::add");
    }

    @Test
    void anObjectWithTraceEventsReadsTheSame(@TempDir Path tmp) throws IOException {
        Path trace = tmp.resolve("t.json");
        Files.writeString(trace, "{\"traceEvents\": " + EVENTS + ", \"displayTimeUnit\": \"ms\"}");
        assertThat(ProfileSummary.read(trace).totalMicros()).isCloseTo(140, within(1e-9));
    }

    @Test
    void aFileThatIsNotATraceIsRefusedByName(@TempDir Path tmp) throws IOException {
        Path notJson = tmp.resolve("a.json");
        Files.writeString(notJson, "{not json");
        assertThatThrownBy(() -> ProfileSummary.read(notJson)).isInstanceOf(IOException.class)
                .hasMessageContaining(notJson + ": not a chrome://tracing JSON file");
        Path other = tmp.resolve("b.json");
        Files.writeString(other, "{\"events\": []}");
        assertThatThrownBy(() -> ProfileSummary.read(other)).hasMessageContaining(other
                + ": expected a list of events or an object with traceEvents");
    }
}
