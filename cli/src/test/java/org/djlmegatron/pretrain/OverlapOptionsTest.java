package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** {@code --overlap-grad-reduce} / {@code --overlap-param-gather} where they cannot run are refused before training, naming the flags. */
class OverlapOptionsTest {

    private static List<String> base(String... more) {
        Path dir = PretrainRunner.fixtures().resolve("hf").resolve("llama");
        List<String> args = TrajectoryParity.args("--init-hf", dir.toString(), "--mock-data", "--lr", "1e-3",
                "--train-iters", "1", "--seq-length", "16", "--micro-batch-size", "1", "--global-batch-size", "2");
        args.addAll(List.of(more));
        return args;
    }

    private static void run(List<String> args) {
        PretrainRunner.run(args.toArray(new String[0]));
    }

    @Test
    void paramGatherWithoutTheDistributedOptimizerIsRefused() {
        assertThatThrownBy(() -> run(base("--nproc-per-node", "2", "--overlap-grad-reduce", "--overlap-param-gather")))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("--overlap-param-gather needs --use-distributed-optimizer");
    }

    @Test
    void paramGatherWithoutOverlappedReductionIsRefused() {
        assertThatThrownBy(() -> run(base("--nproc-per-node", "2", "--use-distributed-optimizer", "--overlap-param-gather")))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("--overlap-param-gather needs --overlap-grad-reduce");
    }

    /** Under pipelining ZeRO-2 reduce-scatters each backward's gradients into the shard as it ends. */
    @Test
    @Tag("native")
    void overlappedReductionUnderPipeliningWithZeroTwoIsRefused() {
        assertThatThrownBy(() -> run(base("--nproc-per-node", "4", "--pipeline-model-parallel-size", "2",
                "--untie-embeddings-and-output-weights", "--data-parallel-sharding-strategy", "optim_grads",
                "--overlap-grad-reduce")))
                .hasRootCauseInstanceOf(IllegalArgumentException.class)
                .rootCause().hasMessageContaining("--overlap-grad-reduce with --pipeline-model-parallel-size 2")
                .hasMessageContaining("optim_grads");
    }

    /** The same under expert parallelism: EP=2 x PP=2 with ZeRO-2 is refused naming the pipeline flag. */
    @Test
    @Tag("native")
    void overlappedReductionUnderExpertsAndPipeliningWithZeroTwoIsRefused() {
        Path dir = PretrainRunner.fixtures().resolve("hf").resolve("mixtral");
        List<String> args = TrajectoryParity.args("--init-hf", dir.toString(), "--mock-data", "--lr", "1e-3",
                "--train-iters", "1", "--seq-length", "16", "--micro-batch-size", "1", "--global-batch-size", "4",
                "--nproc-per-node", "4", "--pipeline-model-parallel-size", "2", "--expert-model-parallel-size", "2",
                "--untie-embeddings-and-output-weights", "--data-parallel-sharding-strategy", "optim_grads",
                "--overlap-grad-reduce");
        assertThatThrownBy(() -> run(args))
                .hasRootCauseInstanceOf(IllegalArgumentException.class)
                .rootCause().hasMessageContaining("--overlap-grad-reduce with --pipeline-model-parallel-size 2")
                .hasMessageContaining("found optim_grads");
    }

    /** DJL's stock engine has no contiguous buffers (no way to make a parameter a view): the overlap is refused, not emulated. */
    @Test
    @Tag("stock-engine")
    void overlappedReductionOnTheStockEngineIsRefused() {
        assertThatThrownBy(() -> run(base("--nproc-per-node", "2", "--overlap-grad-reduce")))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("--overlap-grad-reduce").hasMessageContaining("stock engine");
    }
}
