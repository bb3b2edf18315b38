package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.bridge.djl.DjlMetadata;
import org.djlmegatron.checkpoint.TrainingCheckpoint;
import org.djlmegatron.training.StepResult;
import org.djlmegatron.transformer.RopeScaling;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Megatron's rope scaling flags reach the model in training and travel with its checkpoints. */
class RopeScalingPretrainTest {

    @TempDir
    Path tmp;

    private static String[] args(String... more) {
        List<String> a = new ArrayList<>(List.of("--mock-data", "--num-layers", "1", "--hidden-size", "32",
                "--num-attention-heads", "2", "--seq-length", "32", "--vocab-size", "64", "--micro-batch-size", "2",
                "--position-embedding-type", "rope", "--normalization", "RMSNorm", "--swiglu", "--lr", "3e-3",
                "--seed", "3", "--nproc-per-node", "2", "--tensor-model-parallel-size", "2"));
        a.addAll(List.of(more));
        return a.toArray(new String[0]);
    }

    @Test
    void flagsChangeTheModelAndAreSavedWithIt() {
        double plain = PretrainRunner.run(args("--train-iters", "1")).get(0).loss();
        double linear = PretrainRunner.run(args("--train-iters", "1", "--rotary-seq-len-interpolation-factor", "4"))
                .get(0).loss();
        assertThat(Math.abs(linear - plain)).as("linear scaling changes the first loss").isGreaterThan(1e-6);

        Path ckpt = tmp.resolve("ckpt");
        List<StepResult> first = PretrainRunner.run(args("--train-iters", "2", "--use-rope-scaling",
                "--rope-scaling-factor", "16", "--save", ckpt.toString()));
        assertThat(DjlMetadata.read(TrainingCheckpoint.latest(ckpt)).config().ropeScaling())
                .isEqualTo(RopeScaling.megatronLlama3(16));
        List<StepResult> resumed = PretrainRunner.run(args("--train-iters", "3", "--load", ckpt.toString()));
        assertThat(resumed).extracting(StepResult::iteration).containsExactly(3L);
        assertThat(first).hasSize(2);
    }

    @Test
    void bothScalingsAtOnceAreRefused() {
        assertThatThrownBy(() -> PretrainRunner.run(args("--train-iters", "1", "--use-rope-scaling",
                "--rotary-seq-len-interpolation-factor", "2")))
                .hasMessageContaining("give --use-rope-scaling or --rotary-seq-len-interpolation-factor, not both");
    }
}
