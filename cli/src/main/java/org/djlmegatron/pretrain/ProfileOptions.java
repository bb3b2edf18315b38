package org.djlmegatron.pretrain;

import java.nio.file.Path;
import java.util.List;
import org.djlmegatron.profile.StepProfiler;
import picocli.CommandLine.Option;

/** {@code pretrain-gpt}'s profiling options: Megatron-LM's names, libtorch's profiler (see {@link StepProfiler}). */
public final class ProfileOptions {

    @Option(names = "--profile", description = "record every libtorch operator of the ranks in --profile-ranks during "
            + "iterations [--profile-step-start, --profile-step-end) and write a chrome://tracing file per rank into "
            + "--profile-dir, then print the operators that took the most time (Megatron's --profile with "
            + "--use-pytorch-profiler)")
    public boolean profile;
    @Option(names = "--profile-step-start", defaultValue = "10", description = "first profiled iteration, counted "
            + "from 0 (default: ${DEFAULT-VALUE})")
    public long profileStepStart;
    @Option(names = "--profile-step-end", defaultValue = "12", description = "first iteration no longer profiled "
            + "(default: ${DEFAULT-VALUE})")
    public long profileStepEnd;
    @Option(names = "--profile-ranks", split = ",", defaultValue = "0", description = "global ranks to profile, at "
            + "most one per node: libtorch's profiler runs once per process (default: ${DEFAULT-VALUE})")
    public List<Integer> profileRanks;
    @Option(names = "--profile-dir", defaultValue = "profile", description = "where the traces go, one "
            + "rank<R>-iters<START>-<END>.json per profiled rank (default: ${DEFAULT-VALUE})")
    public Path profileDir;

    /** Refuses a window or rank list that cannot be profiled, naming the flag. */
    void validate(int worldSize, int ranksPerNode) {
        if (!profile) {
            return;
        }
        if (profileStepStart < 0 || profileStepEnd <= profileStepStart) {
            throw new IllegalArgumentException("--profile-step-start " + profileStepStart + ", --profile-step-end "
                    + profileStepEnd + ": expected 0 <= start < end");
        }
        for (int r : profileRanks) {
            if (r < 0 || r >= worldSize) {
                throw new IllegalArgumentException("--profile-ranks: rank " + r + " is outside the world (0.."
                        + (worldSize - 1) + ")");
            }
            long sameNode = profileRanks.stream().filter(o -> o / ranksPerNode == r / ranksPerNode).distinct().count();
            if (sameNode > 1) {
                throw new IllegalArgumentException("--profile-ranks " + profileRanks + ": " + sameNode + " ranks on node "
                        + r / ranksPerNode + "; libtorch's profiler runs once per process, list at most one per node");
            }
        }
    }

    /** The profiler of {@code rank}, or null when it is not profiled. */
    StepProfiler forRank(int rank) {
        if (!profile || !profileRanks.contains(rank)) {
            return null;
        }
        return new StepProfiler(profileStepStart, profileStepEnd,
                profileDir.resolve("rank" + rank + "-iters" + profileStepStart + "-" + profileStepEnd + ".json"));
    }
}
