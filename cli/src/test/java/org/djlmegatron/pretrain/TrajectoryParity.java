package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.djlmegatron.comm.ThreadProcessGroup;
import org.djlmegatron.training.StepResult;

/**
 * The project's training parity harness: a run on one rank is the reference, and every parallel
 * layout (and every execution choice that must not change the arithmetic, such as recomputation)
 * must reproduce its trajectory, with strict sends (a send waits for its receive, as NCCL's does).
 * A {@link Variant} is one point of the matrix, as the extra
 * {@code pretrain-gpt} flags that select it; each issue adds its axis as more variants.
 */
final class TrajectoryParity {

    private TrajectoryParity() {}

    /** One point of the matrix: a name and the flags that select it. */
    record Variant(String name, List<String> flags) {
        static Variant of(String name, String... flags) {
            return new Variant(name, List.of(flags));
        }

        /** This variant combined with {@code other}'s flags. */
        Variant with(Variant other) {
            List<String> f = new ArrayList<>(flags);
            f.addAll(other.flags);
            return new Variant(name + "+" + other.name, f);
        }

        @Override
        public String toString() {
            return name;
        }
    }

    // layouts: the global batch is the same in each, so the trajectories are comparable
    static final Variant SINGLE = Variant.of("tp1", "--nproc-per-node", "1");
    static final Variant TP2 = Variant.of("tp2", "--nproc-per-node", "2", "--tensor-model-parallel-size", "2");
    static final Variant TP2_SP = Variant.of("tp2-sp", "--nproc-per-node", "2", "--tensor-model-parallel-size", "2",
            "--sequence-parallel");
    static final Variant DP2_DISTOPT = Variant.of("dp2-distopt", "--nproc-per-node", "2", "--use-distributed-optimizer");
    // expert parallelism (MoE models): EP is carved out of DP, so these need micro-batch size 1 to
    // keep the reference's micro-batches (the load-balancing loss is per micro-batch)
    static final Variant EP2 = Variant.of("ep2-alltoall", "--nproc-per-node", "2", "--expert-model-parallel-size", "2",
            "--moe-token-dispatcher-type", "alltoall");
    static final Variant EP2_ALLGATHER = Variant.of("ep2-allgather", "--nproc-per-node", "2",
            "--expert-model-parallel-size", "2", "--moe-token-dispatcher-type", "allgather");
    static final Variant EP2_TP2_SP = Variant.of("ep2-tp2-sp", "--nproc-per-node", "4", "--expert-model-parallel-size", "2",
            "--tensor-model-parallel-size", "2", "--sequence-parallel", "--moe-token-dispatcher-type", "alltoall");
    static final Variant DISTOPT = Variant.of("distopt", "--use-distributed-optimizer");

    /**
     * Context parallelism: {@code n} ranks split each sequence, exchanging K/V by {@code comm}
     * ({@code --cp-comm-type}), combined with {@code more} flags (TP via
     * {@code --tensor-model-parallel-size}, DP=2 via {@code --use-distributed-optimizer}); the world
     * size follows.
     */
    static Variant cp(int n, String comm, String... more) {
        List<String> flags = new ArrayList<>(List.of("--context-parallel-size", String.valueOf(n), "--cp-comm-type", comm));
        flags.addAll(List.of(more));
        int world = n;
        int tp = flags.indexOf("--tensor-model-parallel-size");
        if (tp >= 0) {
            world *= Integer.parseInt(flags.get(tp + 1));
        }
        if (flags.contains("--use-distributed-optimizer")) {
            world *= 2; // DP=2
        }
        flags.addAll(List.of("--nproc-per-node", String.valueOf(world)));
        String name = "cp" + n + "-" + comm + (more.length > 0 ? "-" + String.join("", more).replace("--", " ").trim() : "");
        return new Variant(name, flags);
    }

    // pipeline parallelism (1F1B): the layouts above with the model split over stages
    static final Variant PP2 = Variant.of("pp2", "--nproc-per-node", "2", "--pipeline-model-parallel-size", "2");
    static final Variant PP4 = Variant.of("pp4", "--nproc-per-node", "4", "--pipeline-model-parallel-size", "4");
    static final Variant PP2_TP2_SP = Variant.of("pp2-tp2-sp", "--nproc-per-node", "4", "--pipeline-model-parallel-size", "2",
            "--tensor-model-parallel-size", "2", "--sequence-parallel");
    static final Variant PP2_DP2_DISTOPT = Variant.of("pp2-dp2-distopt", "--nproc-per-node", "4",
            "--pipeline-model-parallel-size", "2", "--use-distributed-optimizer");
    // interleaved 1F1B: two model chunks per rank (4 layers: rank 0 holds layers 0 and 2, rank 1 layers 1 and 3)
    static final Variant PP2_VP2 = Variant.of("pp2-vp2", "--nproc-per-node", "2", "--pipeline-model-parallel-size", "2",
            "--virtual-pipeline-model-parallel-size", "2");

    /** Context parallelism inside pipeline stages: CP={@code n} x PP=2 with {@code comm} (world 2n). */
    static Variant cpPp2(int n, String comm) {
        return Variant.of("cp" + n + "-" + comm + "-pp2", "--nproc-per-node", String.valueOf(2 * n),
                "--context-parallel-size", String.valueOf(n), "--cp-comm-type", comm, "--pipeline-model-parallel-size", "2");
    }

    // expert parallelism inside pipeline stages (MoE layers on every stage; EP carved out of DP)
    static final Variant EP2_PP2 = Variant.of("ep2-alltoall-pp2", "--nproc-per-node", "4", "--pipeline-model-parallel-size",
            "2", "--expert-model-parallel-size", "2", "--moe-token-dispatcher-type", "alltoall");

    /** Runs {@code base + variant} flags. */
    static List<StepResult> run(List<String> base, Variant variant) {
        List<String> args = new ArrayList<>(base);
        args.addAll(variant.flags());
        String key = ThreadProcessGroup.STRICT_SENDS_PROPERTY;
        String old = System.getProperty(key);
        System.setProperty(key, "true"); // a send waits for its receive, as on NCCL: no schedule may rely on buffering
        try {
            return PretrainRunner.run(args.toArray(new String[0]));
        } finally {
            if (old == null) {
                System.clearProperty(key);
            } else {
                System.setProperty(key, old);
            }
        }
    }

    /**
     * Runs {@code run} on the flat-vector step ({@code -Ddjlm.gradBuffers=false}): the stock engine's
     * step, which the native library's contiguous buffers replace (a reference for them).
     */
    static <T> T onFlatStep(java.util.function.Supplier<T> run) {
        String key = "djlm.gradBuffers";
        String old = System.getProperty(key);
        System.setProperty(key, "false");
        try {
            return run.get();
        } finally {
            if (old == null) {
                System.clearProperty(key);
            } else {
                System.setProperty(key, old);
            }
        }
    }

    /** Loss and gradient norm of every step equal, bit for bit. */
    static void assertIdentical(List<StepResult> expected, List<StepResult> actual, String what) {
        assertThat(actual).hasSameSizeAs(expected);
        for (int i = 0; i < expected.size(); i++) {
            // as bits: a skipped step's NaN norm must be NaN in both
            assertThat(Double.doubleToLongBits(actual.get(i).loss())).as("%s: loss of step %d (%s vs %s)", what, i + 1,
                    actual.get(i).loss(), expected.get(i).loss()).isEqualTo(Double.doubleToLongBits(expected.get(i).loss()));
            assertThat(Double.doubleToLongBits(actual.get(i).gradNorm())).as("%s: grad norm of step %d (%s vs %s)", what,
                    i + 1, actual.get(i).gradNorm(), expected.get(i).gradNorm())
                    .isEqualTo(Double.doubleToLongBits(expected.get(i).gradNorm()));
        }
    }

    /** Loss within {@code tol} absolute and gradient norm within {@code tol} relative, every step. */
    static void assertClose(List<StepResult> expected, List<StepResult> actual, double tol, String what) {
        assertThat(actual).hasSameSizeAs(expected);
        for (int i = 0; i < expected.size(); i++) {
            StepResult e = expected.get(i);
            StepResult a = actual.get(i);
            assertThat(a.skipped()).as("%s: step %d skipped", what, i + 1).isFalse();
            assertThat(Math.abs(a.loss() - e.loss())).as("%s: loss of step %d (%s vs %s)", what, i + 1, a.loss(), e.loss())
                    .isLessThanOrEqualTo(tol);
            assertThat(Math.abs(a.gradNorm() - e.gradNorm()) / e.gradNorm())
                    .as("%s: grad norm of step %d (%s vs %s)", what, i + 1, a.gradNorm(), e.gradNorm())
                    .isLessThanOrEqualTo(tol);
        }
    }

    /** {@code args} with the value after {@code flag} replaced. */
    static List<String> replace(List<String> args, String flag, String value) {
        List<String> out = new ArrayList<>(args);
        int i = out.indexOf(flag);
        if (i < 0) {
            throw new IllegalArgumentException(flag + " is not among " + args);
        }
        out.set(i + 1, value);
        return out;
    }

    static List<String> args(String... a) {
        return new ArrayList<>(Arrays.asList(a));
    }
}
