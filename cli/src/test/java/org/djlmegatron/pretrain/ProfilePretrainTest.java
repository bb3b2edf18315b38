package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.djlmegatron.profile.ProfileSummary;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** pretrain-gpt's --profile: a trace of the window's iterations on the listed rank, and the operators printed. */
class ProfilePretrainTest {

    private static String train(String... more) {
        String[] base = {"--mock-data", "--num-layers", "1", "--hidden-size", "32", "--num-attention-heads", "2",
            "--seq-length", "16", "--vocab-size", "64", "--micro-batch-size", "2", "--train-iters", "3", "--lr", "1e-3",
            "--nproc-per-node", "2", "--tensor-model-parallel-size", "2"};
        return PretrainRunner.runLogged(java.util.stream.Stream.concat(java.util.Arrays.stream(base),
                java.util.Arrays.stream(more)).toList());
    }

    @Test
    void theWindowOfTheListedRankIsTracedAndSummarised(@TempDir Path tmp) throws Exception {
        Path dir = tmp.resolve("traces");
        String log = train("--profile", "--profile-step-start", "1", "--profile-step-end", "2", "--profile-ranks", "1",
                "--profile-dir", dir.toString());
        Path trace = dir.resolve("rank1-iters1-2.json");
        assertThat(trace).isRegularFile();
        try (var files = Files.list(dir)) {
            assertThat(files.map(p -> p.getFileName().toString()).toList()).containsExactly("rank1-iters1-2.json");
        }
        ProfileSummary summary = ProfileSummary.read(trace);
        List<String> ops = summary.rows().stream().map(ProfileSummary.Row::name).toList();
        assertThat(ops).as("one training iteration's operators").contains("aten::mm", "aten::add_");
        assertThat(log).contains("> profile of rank 1, iterations 1-1: " + trace).contains("aten::mm");
    }

    @Test
    void windowsAndRanksThatCannotBeProfiledAreRefused() {
        assertThatThrownBy(() -> train("--profile", "--profile-step-start", "2", "--profile-step-end", "2"))
                .hasMessageContaining("--profile-step-start 2, --profile-step-end 2: expected 0 <= start < end");
        assertThatThrownBy(() -> train("--profile", "--profile-ranks", "2"))
                .hasMessageContaining("--profile-ranks: rank 2 is outside the world (0..1)");
        assertThatThrownBy(() -> train("--profile", "--profile-ranks", "0,1"))
                .hasMessageContaining("--profile-ranks [0, 1]: 2 ranks on node 0; libtorch's profiler runs once per process");
    }
}
