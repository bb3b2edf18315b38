package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.List;
import org.djlmegatron.options.InvalidOptionException;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Test;

/**
 * {@code --data-parallel-sharding-strategy} combinations that cannot run are refused before
 * training, naming both flags; ZeRO-2 off the gradient-buffer path is refused saying why. Runs on
 * either engine (the buffers are switched off where the refusal needs them off).
 */
class ShardingOptionsTest {

    private static List<String> base(String... more) {
        List<String> args = TrajectoryParity.args("--mock-data", "--num-layers", "2", "--hidden-size", "32",
                "--num-attention-heads", "4", "--seq-length", "8", "--max-position-embeddings", "8", "--vocab-size", "64",
                "--lr", "1e-3", "--train-iters", "1", "--micro-batch-size", "1", "--global-batch-size", "2",
                "--nproc-per-node", "2");
        args.addAll(List.of(more));
        return args;
    }

    private static List<StepResult> run(List<String> args) {
        return PretrainRunner.run(args.toArray(new String[0]));
    }

    @Test
    void theDistributedOptimizerWithNoShardIsRefusedNamingBothFlags() {
        assertThatThrownBy(() -> run(base("--use-distributed-optimizer", "--data-parallel-sharding-strategy", "no_shard")))
                .isInstanceOf(InvalidOptionException.class)
                .hasMessageContaining("--use-distributed-optimizer")
                .hasMessageContaining("--data-parallel-sharding-strategy no_shard");
    }

    @Test
    void anUnknownStrategyIsRefusedWithTheChoices() {
        assertThatThrownBy(() -> run(base("--data-parallel-sharding-strategy", "zero2")))
                .isInstanceOf(InvalidOptionException.class)
                .hasMessage("--data-parallel-sharding-strategy: expected no_shard, optim, optim_grads or "
                        + "optim_grads_params, found zero2");
    }

    /** As Megatron-FSDP, which raises for pipeline parallelism; expert parallelism runs (PipelineExpertBufferTest). */
    @Test
    void zero3WithPipelineParallelismIsRefusedNamingBothFlagsAndWhy() {
        assertThatThrownBy(() -> run(base("--data-parallel-sharding-strategy", "optim_grads_params",
                "--pipeline-model-parallel-size", "2", "--untie-embeddings-and-output-weights")))
                .isInstanceOf(InvalidOptionException.class)
                .hasMessage("--pipeline-model-parallel-size: expected 1 with --data-parallel-sharding-strategy "
                        + "optim_grads_params (ZeRO-3: Megatron-FSDP does not run under pipeline parallelism either; "
                        + "optim_grads does), found 2");
    }

    @Test
    void optimGradsWithoutTheGradientBuffersIsRefusedSayingWhy() {
        String key = "djlm.gradBuffers";
        String old = System.getProperty(key);
        System.setProperty(key, "false");
        try {
            assertThatThrownBy(() -> run(base("--data-parallel-sharding-strategy", "optim_grads")))
                    .hasMessageContaining("--data-parallel-sharding-strategy optim_grads needs the contiguous gradient "
                            + "buffers");
        } finally {
            if (old == null) {
                System.clearProperty(key);
            } else {
                System.setProperty(key, old);
            }
        }
    }

    @Test
    void optimIsTheDistributedOptimizer() {
        List<StepResult> flag = run(base("--use-distributed-optimizer"));
        List<StepResult> strategy = run(base("--data-parallel-sharding-strategy", "optim"));
        TrajectoryParity.assertIdentical(flag, strategy, "optim vs --use-distributed-optimizer");
        assertThat(flag).hasSize(1);
    }
}
