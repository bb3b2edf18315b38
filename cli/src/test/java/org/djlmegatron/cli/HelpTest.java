package org.djlmegatron.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.List;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;
import picocli.CommandLine.Model.OptionSpec;

/** {@code help pretrain-gpt} describes every option and shows its default. */
class HelpTest {

    @Test
    void everyPretrainOptionHasADescriptionAndADefault() {
        CommandLine pretrain = new CommandLine(new Main()).getSubcommands().get("pretrain-gpt");
        List<OptionSpec> options = pretrain.getCommandSpec().options();
        assertThat(options).hasSizeGreaterThan(80);
        for (OptionSpec o : options) {
            String description = String.join(" ", o.description());
            assertThat(description).as(o.longestName()).isNotBlank();
            boolean hasDefault = o.defaultValue() != null || o.usageHelp() || o.versionHelp() || o.arity().max() == 0;
            assertThat(hasDefault || description.contains("default:") || description.contains("required"))
                    .as(o.longestName() + ": " + description).isTrue();
        }
        String help = CliCapture.stdoutOf(() -> Main.run("help", "pretrain-gpt"));
        assertThat(help).contains("--micro-batch-size=<microBatchSize>").contains("Default: 4")
                .contains("--intra-op-threads").contains("--no-verify").contains("--allow-nonfinite")
                .doesNotContainPattern("--lr=<lr> +peak learning rate \\(required\\)\\s+Default");
    }

    @Test
    void everyBenchMemoryOptionHasADescriptionAndADefault() {
        CommandLine bench = new CommandLine(new Main()).getSubcommands().get("bench-memory");
        for (OptionSpec o : bench.getCommandSpec().options()) {
            String description = String.join(" ", o.description());
            assertThat(description).as(o.longestName()).isNotBlank();
            assertThat(description.contains("default:") || o.usageHelp() || o.versionHelp())
                    .as(o.longestName() + ": " + description).isTrue();
        }
    }
}
