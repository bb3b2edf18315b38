package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.bridge.LogitsRunner;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * {@code --save}/{@code --load} at EP=2 (world 2): an MoE model with gated shared experts and the
 * balancing losses on, trained 3 iterations, saved as Megatron's expert-sharded layout
 * ({@code mp_rank_00_000}, {@code mp_rank_00_001}), resumed for 3 more, equals 6 straight
 * iterations exactly, with and without the distributed optimizer. The saved weights give the same
 * logits read at EP=1 as at EP=2; resuming the optimizer state at another EP size is refused.
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
        // the optimizer state does not reshard across EP sizes: a clear refusal, the weights alone load
        List<String> atOne = args("--train-iters", "4", "--load", ckpt.toString(), "--nproc-per-node", "2",
                "--use-distributed-optimizer");
        assertThatThrownBy(() -> run(atOne)).hasMessageContaining("saved at --expert-model-parallel-size 2, resumed at 1");
        atOne.add("--finetune");
        assertThat(run(atOne)).hasSize(4);
    }
}
