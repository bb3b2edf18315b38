package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.bridge.LogitsRunner;
import org.djlmegatron.io.SafetensorsReader;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * {@code --save}/{@code --load} at EP=2 (world 2): an MoE model with gated shared experts and the
 * balancing losses on, trained 3 iterations, saved as Megatron's expert-sharded layout
 * ({@code mp_rank_00_000}, {@code mp_rank_00_001}), resumed for 3 more, equals 6 straight
 * iterations exactly, with and without the distributed optimizer. The saved weights give the same
 * logits read at EP=1 as at EP=2; the optimizer state resumed at EP=1 continues the EP=2 run.
 */
class ExpertCheckpointTest {

    @TempDir
    Path tmp;

    private static List<String> args(String... more) {
        List<String> a = new ArrayList<>(List.of("--mock-data", "--num-layers", "2", "--hidden-size", "32",
                "--num-attention-heads", "4", "--seq-length", "16", "--vocab-size", "128", "--swiglu",
                "--normalization", "RMSNorm", "--position-embedding-type", "rope", "--disable-bias-linear",
                "--num-experts", "4", "--moe-router-topk", "2", "--moe-ffn-hidden-size", "16",
                "--moe-shared-expert-intermediate-size", "24", "--moe-shared-expert-gate",
                "--moe-aux-loss-coeff", "0.01", "--moe-z-loss-coeff", "0.001",
                "--micro-batch-size", "2", "--global-batch-size", "4", "--lr", "3e-3", "--lr-decay-style", "cosine",
                "--lr-decay-iters", "20", "--seed", "11"));
        a.addAll(List.of(more));
        return a;
    }

    private static List<StepResult> run(List<String> args) {
        return PretrainRunner.run(args.toArray(new String[0]));
    }

    @ParameterizedTest(name = "distributed optimizer {0}")
    @ValueSource(booleans = {false, true})
    void threePlusThreeAtEp2EqualsSixStraight(boolean distributedOptimizer) {
        List<String> ep2 = new ArrayList<>(List.of("--nproc-per-node", "2", "--expert-model-parallel-size", "2",
                "--moe-token-dispatcher-type", "alltoall"));
        if (distributedOptimizer) {
            ep2.add("--use-distributed-optimizer");
        }
        List<String> straightArgs = args("--train-iters", "6");
        straightArgs.addAll(ep2);
        List<StepResult> straight = run(straightArgs);
        Path ckpt = tmp.resolve("ckpt");
        List<String> first = args("--train-iters", "3", "--save", ckpt.toString());
        first.addAll(ep2);
        run(first);
        Path iter = ckpt.resolve("iter_0000003");
        assertThat(iter.resolve("mp_rank_00_000/model.safetensors")).exists();
        assertThat(iter.resolve("mp_rank_00_001/model.safetensors")).exists();
        List<String> second = args("--train-iters", "6", "--load", ckpt.toString());
        second.addAll(ep2);
        List<StepResult> resumed = run(second);
        assertThat(resumed).extracting(StepResult::iteration).containsExactly(4L, 5L, 6L);
        for (StepResult r : resumed) {
            StepResult s = straight.get((int) r.iteration() - 1);
            assertThat(r.loss()).as("loss at iteration %d", r.iteration()).isEqualTo(s.loss());
            assertThat(r.gradNorm()).as("grad norm at iteration %d", r.iteration()).isEqualTo(s.gradNorm());
        }

        if (!distributedOptimizer) {
            return;
        }
        // the expert shards read back at EP=1 (TP=1) give the EP=2 logits
        long[] ids = new long[2 * 16];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = (i * 37L + 5) % 128;
        }
        float[] atEp2 = LogitsRunner.logits(iter, null, ids, 2, 1, 2, false);
        float[] atEp1 = LogitsRunner.logits(iter, null, ids, 2, 1, 1, false);
        for (int i = 0; i < atEp1.length; i++) {
            assertThat(atEp1[i]).as("logit %d", i).isCloseTo(atEp2[i], org.assertj.core.data.Offset.offset(1e-5f));
        }
        // the optimizer state reshards across EP sizes: EP=1 x DP=2 continues as the EP=2 run
        List<String> atOne = args("--train-iters", "6", "--load", ckpt.toString(), "--nproc-per-node", "2",
                "--use-distributed-optimizer");
        List<StepResult> ep1 = run(atOne);
        assertThat(ep1).extracting(StepResult::iteration).containsExactly(4L, 5L, 6L);
        TrajectoryParity.assertClose(straight.subList(3, 6), ep1, 1e-5, "EP=2 checkpoint resumed at EP=1 x DP=2");
    }

    /**
     * Aux-loss-free balancing: the routers' expert biases are saved ({@code buffers.safetensors},
     * Megatron's {@code ...router.expert_bias}) and restored, so 3 + 3 iterations equal 6 straight
     * bit for bit; a rate large enough that the bias changes which experts are chosen.
     */
    @org.junit.jupiter.api.Test
    void expertBiasIsSavedAndRestored() {
        List<String> bias = List.of("--nproc-per-node", "2", "--expert-model-parallel-size", "2",
                "--moe-token-dispatcher-type", "alltoall", "--moe-router-score-function", "sigmoid",
                "--moe-router-enable-expert-bias", "--moe-router-bias-update-rate", "0.05");
        List<String> straightArgs = args("--train-iters", "6");
        straightArgs.addAll(bias);
        List<StepResult> straight = run(straightArgs);
        Path ckpt = tmp.resolve("bias");
        List<String> first = args("--train-iters", "3", "--save", ckpt.toString());
        first.addAll(bias);
        run(first);
        try (SafetensorsReader r = SafetensorsReader.open(ckpt.resolve("iter_0000003/mp_rank_00_001/buffers.safetensors"))) {
            assertThat(r.keys()).containsExactly("decoder.layers.0.mlp.router.expert_bias",
                    "decoder.layers.1.mlp.router.expert_bias");
            float[] saved = r.loadFloats("decoder.layers.1.mlp.router.expert_bias");
            assertThat(saved).hasSize(4);
            assertThat(saved).as("the bias moved in 3 updates").isNotEqualTo(new float[4]);
        }
        List<String> second = args("--train-iters", "6", "--load", ckpt.toString());
        second.addAll(bias);
        List<StepResult> resumed = run(second);
        assertThat(resumed).extracting(StepResult::iteration).containsExactly(4L, 5L, 6L);
        TrajectoryParity.assertIdentical(straight.subList(3, 6), resumed, "expert bias resumed");
    }
}
