package org.djlmegatron.cli;

import java.util.concurrent.Callable;
import org.djlmegatron.pretrain.PretrainGpt;
import org.djlmegatron.pretrain.PretrainOptions;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Spec;

/** {@code pretrain-gpt}: Megatron's GPT pretraining on thread ranks, with Megatron's flag names. */
@Command(name = "pretrain-gpt", mixinStandardHelpOptions = true, sortOptions = false, showDefaultValues = true,
        resourceBundle = "org.djlmegatron.pretrain.PretrainOptions",
        description = "Pretrain (or continue training) a GPT-family model with tensor and data parallelism.")
final class PretrainGptCommand implements Callable<Integer> {

    @Mixin
    PretrainOptions options;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() {
        options.setCommandLine(spec.commandLine().getParseResult().originalArgs().toArray(new String[0]));
        new PretrainGpt(options, System.out).run();
        return 0;
    }
}
