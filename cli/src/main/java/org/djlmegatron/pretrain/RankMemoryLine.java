package org.djlmegatron.pretrain;

import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.djlmegatron.training.buffers.RankMemory;
import org.djlmegatron.training.buffers.ShardingStrategy;

/** pretrain-gpt's memory line (rank 0's measured model-state bytes after the first step), and its parser for the benchmarks. */
public final class RankMemoryLine {

    private static final Pattern LINE = Pattern.compile(
            "> model state on rank 0 \\(measured\\): parameters (\\d+) B, gradients (\\d+) B, optimizer (\\d+) B");

    private RankMemoryLine() {}

    public static String format(RankMemory m, ShardingStrategy sharding) {
        return String.format(Locale.ROOT, "> model state on rank 0 (measured): parameters %d B, gradients %d B, "
                + "optimizer %d B; total %.2f MB (--data-parallel-sharding-strategy %s)", m.parameterBytes(),
                m.gradientBytes(), m.optimizerBytes(), m.total() / 1048576.0, sharding.flagValue());
    }

    /** The memory line's figures in a pretrain-gpt log; an error naming the line when it is missing. */
    public static RankMemory parse(String log) {
        Matcher m = LINE.matcher(log);
        if (!m.find()) {
            throw new IllegalStateException("no '> model state on rank 0 (measured)' line in the pretrain-gpt output");
        }
        return new RankMemory(Long.parseLong(m.group(1)), Long.parseLong(m.group(2)), Long.parseLong(m.group(3)));
    }
}
