package org.djlmegatron.comm;

import org.djlmegatron.launch.DistributedWorld;
import java.io.ObjectOutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;

/**
 * One node of a multi-JVM test, started by {@link MultiJvmTest} in a JVM of its own. Reads its
 * place from the torchrun environment (MASTER_ADDR, NNODES, NODE_RANK, ...), runs two ranks per
 * JVM through each scenario given as {@code name=port} (one rendezvous per scenario, on that
 * port), and writes its ranks' results to the output file.
 *
 * <p>Usage: {@code MultiJvmNode OUTPUT SCENARIO=PORT...}
 */
public final class MultiJvmNode {

    static final int NPROC = 2;

    private MultiJvmNode() {}

    /** The grid of a scenario. */
    static RankGrid grid(String scenario) {
        return switch (scenario) {
            case "train-tp2-dp2", "die" -> RankGrid.create(4, 2, 1, 1, 1);
            case "collectives-tp4" -> RankGrid.create(4, 4, 1, 1, 1);
            default -> throw new IllegalArgumentException("unknown scenario " + scenario);
        };
    }

    /** The work of one rank in a scenario. */
    static Function<RankContext, Map<String, byte[]>> body(String scenario) {
        return switch (scenario) {
            case "train-tp2-dp2" -> ctx -> {
                Map<String, byte[]> out = new LinkedHashMap<>(Workloads.trainingLike(ctx, 4));
                Workloads.everyCollective(ctx, GroupKind.DATA).forEach((k, v) -> out.put("dp " + k, v));
                return out;
            };
            case "collectives-tp4" -> ctx -> {
                Map<String, byte[]> out = new LinkedHashMap<>(Workloads.everyCollective(ctx, GroupKind.TENSOR));
                Workloads.trainingLike(ctx, 2).forEach((k, v) -> out.put("tp4 " + k, v));
                return out;
            };
            case "die" -> ctx -> {
                for (int step = 0; step < 10_000; step++) {
                    if (ctx.rank() == 2 && step == 3) {
                        System.exit(3); // the whole JVM goes, mid-collective for its peers
                    }
                    ctx.group(GroupKind.DATA).allReduce(ctx.manager().ones(new ai.djl.ndarray.types.Shape(64)),
                            ReduceOp.SUM).close();
                    ctx.tensorGroup().barrier();
                }
                return Map.of();
            };
            default -> throw new IllegalArgumentException("unknown scenario " + scenario);
        };
    }

    public static void main(String[] args) {
        try {
            LaunchConfig env = LaunchConfig.fromEnvironment(System.getenv(), NPROC);
            Map<String, List<Map<String, byte[]>>> results = new LinkedHashMap<>();
            for (int i = 1; i < args.length; i++) {
                String[] kv = args[i].split("=");
                String scenario = kv[0];
                LaunchConfig launch = new LaunchConfig(env.nprocPerNode(), env.nnodes(), env.nodeRank(),
                        env.masterAddr(), Integer.parseInt(kv[1]), env.timeout(), env.runId());
                results.put(scenario, new ArrayList<>(DistributedWorld.run(grid(scenario), launch, body(scenario))));
                System.out.println("node " + env.nodeRank() + ": " + scenario + " done");
            }
            Path tmp = Path.of(args[0] + ".tmp");
            try (ObjectOutputStream out = new ObjectOutputStream(Files.newOutputStream(tmp))) {
                out.writeObject(results);
            }
            Files.move(tmp, Path.of(args[0]));
            System.exit(0);
        } catch (Throwable t) {
            t.printStackTrace();
            System.exit(1);
        }
    }
}
