package org.djlmegatron.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** {@code djl-megatron}: every command of the project. */
@Command(
        name = "djl-megatron",
        mixinStandardHelpOptions = true,
        version = "djl-megatron 0.1.0",
        description = "Megatron-style parallel training of GPT-family models on DJL.",
        subcommands = {PretrainGptCommand.class, LogitsCommand.class, GenerateCommand.class, ServeCommand.class, EvaluateCommand.class, BenchGenerateCommand.class, ConvertCommand.class, BenchConvertCommand.class, BenchCommand.class, BenchTrainCommand.class, BenchMemoryCommand.class, BenchEasyTrainCommand.class, PreprocessDataCommand.class, InspectDataCommand.class, BenchDataCommand.class, BenchCommCommand.class, BenchAttentionCommand.class, CheckDeviceCommand.class, CommandLine.HelpCommand.class})
public final class Main {

    public static void main(String[] args) {
        System.exit(run(args));
    }

    /** Runs a command line; returns the exit status (errors are printed as one line). */
    public static int run(String... args) {
        System.setProperty("ai.djl.offline", System.getProperty("ai.djl.offline", "true"));
        CommandLine cli = new CommandLine(new Main());
        cli.setExecutionExceptionHandler((ex, cmd, parsed) -> {
            cmd.getErr().println("djl-megatron " + cmd.getCommandName() + ": error: " + reason(ex));
            if (System.getenv("DJLM_DEBUG") != null) {
                ex.printStackTrace(cmd.getErr());
            }
            return 1;
        });
        cli.setParameterExceptionHandler((ex, unused) -> {
            CommandLine cmd = ex.getCommandLine();
            String name = cmd.getCommandName();
            cmd.getErr().println("djl-megatron " + name + ": error: " + ex.getMessage().replace('\n', ' '));
            cmd.getErr().println("see: djl-megatron help" + (cmd == cli ? "" : " " + name));
            return cmd.getCommandSpec().exitCodeOnInvalidInput();
        });
        return cli.execute(args);
    }

    /** The innermost message worth showing: wrappers from the thread ranks are unwrapped. */
    static String reason(Throwable t) {
        Throwable cause = t;
        while (cause.getCause() != null && cause.getMessage() != null
                && cause.getMessage().startsWith("rank ")) {
            cause = cause.getCause();
        }
        String msg = cause.getMessage();
        return msg == null ? cause.getClass().getSimpleName() : msg.replace('\n', ' ');
    }
}
