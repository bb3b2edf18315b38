package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.pytorch.jni.JniUtils;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.djlmegatron.engine.ThreadBudget;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

/** pretrain-gpt gives each rank thread its share of the cores, or what --intra-op-threads says. */
class ThreadBudgetPretrainTest {

    private static String train(String... more) {
        PretrainOptions o = new PretrainOptions();
        String[] base = {"--mock-data", "--num-layers", "1", "--hidden-size", "32", "--num-attention-heads", "2",
            "--seq-length", "16", "--vocab-size", "64", "--micro-batch-size", "2", "--train-iters", "1", "--lr", "1e-3",
            "--nproc-per-node", "2", "--tensor-model-parallel-size", "2"};
        String[] args = java.util.stream.Stream.concat(java.util.Arrays.stream(base), java.util.Arrays.stream(more))
                .toArray(String[]::new);
        new CommandLine(o).parseArgs(args);
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        new PretrainGpt(o, new PrintStream(buf, true, StandardCharsets.UTF_8)).run();
        return buf.toString(StandardCharsets.UTF_8);
    }

    @Test
    void twoRanksShareTheCoresAndTheFlagOverrides() {
        int before = JniUtils.getNumThreads();
        try {
            int expected = ThreadBudget.intraOpThreads(null, 2); // cores / 2, or OMP_NUM_THREADS when set
            String log = train();
            assertThat(log).contains("> intra-op threads per rank: " + expected + " (");
            assertThat(JniUtils.getNumThreads()).isEqualTo(expected);
            train("--intra-op-threads", "3");
            assertThat(JniUtils.getNumThreads()).isEqualTo(3);
        } finally {
            ThreadBudget.apply(before);
        }
    }
}
