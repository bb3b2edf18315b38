package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Context-parallel settings the layout cannot run are refused before training, naming the flag. */
class ContextParallelOptionsTest {

    private static List<String> base(String... more) {
        Path dir = PretrainRunner.fixtures().resolve("hf").resolve("llama");
        List<String> args = TrajectoryParity.args("--init-hf", dir.toString(), "--mock-data", "--lr", "1e-3", "--train-iters", "1",
                "--micro-batch-size", "1", "--global-batch-size", "1", "--hidden-dropout", "0", "--attention-dropout", "0");
        args.addAll(List.of(more));
        return args;
    }

    private static void run(List<String> args) {
        PretrainRunner.run(args.toArray(new String[0]));
    }

    @Test
    void aSequenceNotDivisibleIntoTwoNChunksIsRefused() {
        assertThatThrownBy(() -> run(base("--seq-length", "60", "--nproc-per-node", "4", "--context-parallel-size", "4")))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("--context-parallel-size 4").hasMessageContaining("(60)");
    }

    @Test
    void anUnknownCommTypeIsRefused() {
        assertThatThrownBy(() -> run(base("--seq-length", "64", "--nproc-per-node", "2", "--context-parallel-size", "2",
                "--cp-comm-type", "ring")))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("--cp-comm-type")
                .hasMessageContaining("'ring'");
    }

    @Test
    void documentMaskingWithoutATokenizerIsRefused() {
        assertThatThrownBy(() -> run(base("--seq-length", "64", "--reset-attention-mask", "--eod-mask-loss")))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("--reset-attention-mask --eod-mask-loss").hasMessageContaining("--tokenizer-type");
    }
}
