package org.djlmegatron.cli;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;
import picocli.CommandLine;
import picocli.CommandLine.Model.OptionSpec;

/** {@code bench-comm} runs on threads and over TCP, documents its options and rejects bad sizes. */
class BenchCommCommandTest {

    @Test
    void printsEveryWayWithRatiosOnThreadsAndOverTcp() {
        for (String nodes : new String[] {"1", "2"}) {
            int[] rc = new int[1];
            String out = CliCapture.stdoutOf(() -> rc[0] = Main.run("bench-comm", "--elements", "4096", "--dp", "2",
                    "--nodes", nodes, "--warmup", "0", "--steps", "1"));
            assertThat(rc[0]).isZero();
            assertThat(out).contains("fp32 buffer of 4096 elements").contains(nodes.equals("1") ? "thread ranks"
                    : "2 in-process nodes over TCP").containsPattern("allReduce +[0-9.]+ ms = 1\\.00x allReduce")
                    .containsPattern("reduceScatter +[0-9.]+ ms = [0-9.]+x allReduce")
                    .containsPattern("reduce per owner +[0-9.]+ ms = [0-9.]+x allReduce")
                    .containsPattern("reduce per owner / reduceScatter: [0-9.]+x");
        }
    }

    @Test
    void everyOptionHasADescriptionAndADefault() {
        CommandLine bench = new CommandLine(new Main()).getSubcommands().get("bench-comm");
        for (OptionSpec o : bench.getCommandSpec().options()) {
            String description = String.join(" ", o.description());
            assertThat(description.contains("default:") || o.usageHelp() || o.versionHelp())
                    .as(o.longestName() + ": " + description).isTrue();
        }
    }

    @Test
    void sizesThatDoNotDivideAreRejectedInOneLine() {
        int[] rc = new int[1];
        String err = CliCapture.stderrOf(() -> CliCapture.stdoutOf(() -> rc[0] = Main.run("bench-comm", "--elements",
                "5", "--dp", "2")));
        assertThat(rc[0]).isNotZero();
        assertThat(err.strip()).isEqualTo("djl-megatron bench-comm: error: --elements must be a multiple of --dp 2, got 5");
        err = CliCapture.stderrOf(() -> CliCapture.stdoutOf(() -> Main.run("bench-comm", "--dp", "3", "--nodes", "2",
                "--elements", "6")));
        assertThat(err.strip()).isEqualTo("djl-megatron bench-comm: error: --dp must be a multiple of --nodes 2, got 3");
    }
}
