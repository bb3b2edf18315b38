package org.djlmegatron.comm;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * Where this JVM sits in a multi-node job: {@code nnodes} JVMs ("nodes"; one per machine, or
 * several on one machine in tests), each running {@code nprocPerNode} ranks as threads. Global
 * rank = {@code nodeRank * nprocPerNode + localRank}. Node 0 listens on
 * {@code masterAddr:masterPort} for the {@link Rendezvous}.
 *
 * @param nprocPerNode ranks (threads) in every JVM
 * @param nnodes number of JVMs in the job
 * @param nodeRank this JVM's index, {@code 0 <= nodeRank < nnodes}
 * @param masterAddr host name or address of node 0
 * @param masterPort node 0's rendezvous port
 * @param timeout the limit for the rendezvous and for every wait inside a collective
 * @param runId an identifier every node must share (nodes of another job are refused)
 */
public record LaunchConfig(
        int nprocPerNode, int nnodes, int nodeRank, String masterAddr, int masterPort, Duration timeout, String runId) {

    /** torchrun's default rendezvous port. */
    public static final int DEFAULT_PORT = 29500;

    /** The master address of a single-node job. */
    public static final String DEFAULT_ADDR = "127.0.0.1";

    /** The run id when the environment names none. */
    public static final String DEFAULT_RUN_ID = "default";

    /** The limit for the rendezvous and every collective wait unless {@code DJLM_TIMEOUT_SECONDS} says otherwise. */
    public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(120);

    public LaunchConfig {
        Objects.requireNonNull(masterAddr, "masterAddr");
        Objects.requireNonNull(timeout, "timeout");
        Objects.requireNonNull(runId, "runId");
        if (nprocPerNode < 1) {
            throw new IllegalArgumentException("nproc-per-node must be >= 1, got " + nprocPerNode);
        }
        if (nnodes < 1) {
            throw new IllegalArgumentException("the number of nodes must be >= 1, got " + nnodes);
        }
        if (nodeRank < 0 || nodeRank >= nnodes) {
            throw new IllegalArgumentException(
                    "node rank " + nodeRank + " is out of range for " + nnodes + " node(s): use 0.." + (nnodes - 1));
        }
        if (masterAddr.isBlank()) {
            throw new IllegalArgumentException("the master address is blank");
        }
        if (masterPort < 1 || masterPort > 65535) {
            throw new IllegalArgumentException("the master port must be in 1..65535, got " + masterPort);
        }
        if (timeout.isNegative() || timeout.isZero()) {
            throw new IllegalArgumentException("the timeout must be positive, got " + timeout);
        }
        if ((long) nprocPerNode * nnodes > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(nnodes + " nodes x " + nprocPerNode + " ranks is too many ranks");
        }
    }

    /** Without a run id: {@link #DEFAULT_RUN_ID}. */
    public LaunchConfig(int nprocPerNode, int nnodes, int nodeRank, String masterAddr, int masterPort, Duration timeout) {
        this(nprocPerNode, nnodes, nodeRank, masterAddr, masterPort, timeout, DEFAULT_RUN_ID);
    }

    /** One JVM running {@code nprocPerNode} ranks; nothing listens on the network. */
    public static LaunchConfig singleNode(int nprocPerNode, Duration timeout) {
        return new LaunchConfig(nprocPerNode, 1, 0, DEFAULT_ADDR, DEFAULT_PORT, timeout);
    }

    /** {@link #fromEnvironment(Map, int)} on this process's environment. */
    public static LaunchConfig fromEnvironment(int nprocPerNode) {
        return fromEnvironment(System.getenv(), nprocPerNode);
    }

    /**
     * Reads the torchrun / Slurm environment contract.
     *
     * <ul>
     *   <li>{@code MASTER_ADDR}; else the first host of {@code SLURM_JOB_NODELIST} (or
     *       {@code SLURM_NODELIST}); else {@code 127.0.0.1}.
     *   <li>{@code MASTER_PORT}; else 29500.
     *   <li>Number of nodes: {@code NNODES}; else {@code WORLD_SIZE / nprocPerNode} (WORLD_SIZE
     *       counts ranks); else {@code SLURM_NNODES} (or {@code SLURM_JOB_NUM_NODES}); else 1.
     *       {@code NNODES} and {@code WORLD_SIZE} must agree when both are set.
     *   <li>Node rank: {@code NODE_RANK}; else {@code GROUP_RANK} (torchrun's name); else
     *       {@code RANK / nprocPerNode} (RANK is then the global rank of the node's first rank);
     *       else {@code SLURM_NODEID}; else 0. Those of the first three that are set must agree.
     *   <li>Timeout: {@code DJLM_TIMEOUT_SECONDS}; else 120 s.
     *   <li>Run id: {@code TORCHELASTIC_RUN_ID}; else {@code SLURM_JOB_ID}; else {@code "default"}.
     * </ul>
     * Explicit torchrun-style variables win over Slurm's.
     *
     * @throws IllegalArgumentException naming the variable and its value when a setting is
     *     malformed, out of range or contradicts another
     */
    public static LaunchConfig fromEnvironment(Map<String, String> env, int nprocPerNode) {
        if (nprocPerNode < 1) {
            throw new IllegalArgumentException("nproc-per-node must be >= 1, got " + nprocPerNode);
        }
        String addr = text(env, "MASTER_ADDR");
        if (addr == null) {
            String listVar = text(env, "SLURM_JOB_NODELIST") != null ? "SLURM_JOB_NODELIST" : "SLURM_NODELIST";
            String list = text(env, listVar);
            if (list != null) {
                try {
                    addr = parseNodeList(list).get(0);
                } catch (IllegalArgumentException e) {
                    throw new IllegalArgumentException(
                            setting(listVar, list) + " is not a Slurm node list: " + e.getMessage(), e);
                }
            } else {
                addr = DEFAULT_ADDR;
            }
        }
        Integer port = integer(env, "MASTER_PORT");
        if (port != null && (port < 1 || port > 65535)) {
            throw new IllegalArgumentException(setting("MASTER_PORT", env.get("MASTER_PORT"))
                    + " is not a TCP port (1..65535)");
        }

        Integer nnodesVar = positive(env, "NNODES");
        Integer worldSize = positive(env, "WORLD_SIZE");
        if (worldSize != null && worldSize % nprocPerNode != 0) {
            throw new IllegalArgumentException(setting("WORLD_SIZE", env.get("WORLD_SIZE"))
                    + " is not a multiple of nproc-per-node " + nprocPerNode
                    + " (WORLD_SIZE counts ranks: nodes x nproc-per-node)");
        }
        if (nnodesVar != null && worldSize != null && (long) nnodesVar * nprocPerNode != worldSize) {
            throw new IllegalArgumentException(setting("WORLD_SIZE", env.get("WORLD_SIZE")) + " contradicts "
                    + setting("NNODES", env.get("NNODES")) + " with nproc-per-node " + nprocPerNode
                    + ": expected WORLD_SIZE=" + (long) nnodesVar * nprocPerNode);
        }
        String nnodesSource;
        int nnodes;
        if (nnodesVar != null) {
            nnodes = nnodesVar;
            nnodesSource = setting("NNODES", env.get("NNODES"));
        } else if (worldSize != null) {
            nnodes = worldSize / nprocPerNode;
            nnodesSource = setting("WORLD_SIZE", env.get("WORLD_SIZE")) + " / nproc-per-node " + nprocPerNode;
        } else {
            String slurmVar = text(env, "SLURM_NNODES") != null ? "SLURM_NNODES" : "SLURM_JOB_NUM_NODES";
            Integer slurm = positive(env, slurmVar);
            nnodes = slurm == null ? 1 : slurm;
            nnodesSource = slurm == null ? "the default of 1" : setting(slurmVar, env.get(slurmVar));
        }

        // node rank: NODE_RANK, GROUP_RANK, RANK / nproc must agree where set
        String rankSource = null;
        Integer nodeRank = null;
        for (String var : new String[] {"NODE_RANK", "GROUP_RANK", "RANK"}) {
            Integer value = nonNegative(env, var);
            if (value == null) {
                continue;
            }
            String source = setting(var, env.get(var));
            if (var.equals("RANK")) {
                if (value % nprocPerNode != 0) {
                    throw new IllegalArgumentException(source + " is not a multiple of nproc-per-node "
                            + nprocPerNode + " (RANK is the global rank of the node's first rank;"
                            + " set NODE_RANK instead)");
                }
                value /= nprocPerNode;
                source += " / nproc-per-node " + nprocPerNode;
            }
            if (nodeRank == null) {
                nodeRank = value;
                rankSource = source;
            } else if (!nodeRank.equals(value)) {
                throw new IllegalArgumentException(source + " gives node rank " + value + ", but "
                        + rankSource + " gives " + nodeRank);
            }
        }
        if (nodeRank == null) {
            Integer slurm = nonNegative(env, "SLURM_NODEID");
            nodeRank = slurm == null ? 0 : slurm;
            rankSource = slurm == null ? "the default of 0" : setting("SLURM_NODEID", env.get("SLURM_NODEID"));
        }
        if (nodeRank >= nnodes) {
            throw new IllegalArgumentException("node rank " + nodeRank + " (from " + rankSource
                    + ") is out of range: there are " + nnodes + " node(s) (from " + nnodesSource + ")");
        }

        Duration timeout = DEFAULT_TIMEOUT;
        String seconds = text(env, "DJLM_TIMEOUT_SECONDS");
        if (seconds != null) {
            try {
                double s = Double.parseDouble(seconds);
                if (!(s > 0) || Double.isInfinite(s)) {
                    throw new NumberFormatException();
                }
                timeout = Duration.ofMillis(Math.max(1, Math.round(s * 1000)));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(setting("DJLM_TIMEOUT_SECONDS", seconds)
                        + " is not a positive number of seconds");
            }
        }
        String runId = text(env, "TORCHELASTIC_RUN_ID");
        if (runId == null) {
            runId = text(env, "SLURM_JOB_ID");
        }
        return new LaunchConfig(nprocPerNode, nnodes, nodeRank, addr, port == null ? DEFAULT_PORT : port,
                timeout, runId == null ? DEFAULT_RUN_ID : runId);
    }

    /** Total number of ranks: {@code nnodes * nprocPerNode}. */
    public int worldSize() {
        return nnodes * nprocPerNode;
    }

    /** The global rank of this node's first rank: {@code nodeRank * nprocPerNode}. */
    public int firstRank() {
        return nodeRank * nprocPerNode;
    }

    /** The same launch with another timeout. */
    public LaunchConfig withTimeout(Duration newTimeout) {
        return new LaunchConfig(nprocPerNode, nnodes, nodeRank, masterAddr, masterPort, newTimeout, runId);
    }

    /**
     * Expands a Slurm node list: comma-separated entries, each a host name with optional bracketed
     * ranges, e.g. {@code "a,b[1-3,5],gpu-[01-04]"} gives a, b1, b2, b3, b5, gpu-01, ..., gpu-04.
     * Zero padding follows the range's lower bound; several bracket groups in one entry expand
     * as a product. Entries expand in order.
     *
     * @throws IllegalArgumentException describing what is malformed
     */
    public static List<String> parseNodeList(String list) {
        List<String> hosts = new ArrayList<>();
        int depth = 0;
        int start = 0;
        for (int i = 0; i <= list.length(); i++) {
            char c = i < list.length() ? list.charAt(i) : ',';
            if (c == '[') {
                if (++depth > 1) {
                    throw new IllegalArgumentException("nested '[' at position " + i);
                }
            } else if (c == ']') {
                if (--depth < 0) {
                    throw new IllegalArgumentException("']' without '[' at position " + i);
                }
            } else if (c == ',' && depth == 0) {
                String entry = list.substring(start, i).trim();
                if (entry.isEmpty()) {
                    throw new IllegalArgumentException("empty host name at position " + start);
                }
                expand(entry, hosts);
                start = i + 1;
            }
        }
        if (depth != 0) {
            throw new IllegalArgumentException("unclosed '['");
        }
        return List.copyOf(hosts);
    }

    private static final int MAX_HOSTS = 1 << 20;

    private static void expand(String entry, List<String> out) {
        int open = entry.indexOf('[');
        if (open < 0) {
            if (entry.contains("]")) {
                throw new IllegalArgumentException("']' without '[' in " + entry);
            }
            out.add(entry);
            return;
        }
        int close = entry.indexOf(']', open);
        String prefix = entry.substring(0, open);
        String rest = entry.substring(close + 1);
        String ranges = entry.substring(open + 1, close);
        if (ranges.isBlank()) {
            throw new IllegalArgumentException("empty range '[]' in " + entry);
        }
        for (String range : ranges.split(",", -1)) {
            String r = range.trim();
            int dash = r.indexOf('-');
            String lo = dash < 0 ? r : r.substring(0, dash);
            String hi = dash < 0 ? r : r.substring(dash + 1);
            if (!lo.matches("\\d{1,9}") || !hi.matches("\\d{1,9}")) {
                throw new IllegalArgumentException("bad range '" + r + "' in " + entry
                        + " (expected N or N-M with decimal N <= M)");
            }
            int from = Integer.parseInt(lo);
            int to = Integer.parseInt(hi);
            if (to < from) {
                throw new IllegalArgumentException("descending range '" + r + "' in " + entry);
            }
            for (int k = from; k <= to; k++) {
                if (out.size() >= MAX_HOSTS) {
                    throw new IllegalArgumentException("more than " + MAX_HOSTS + " hosts");
                }
                String number = String.format("%0" + lo.length() + "d", k);
                expand(prefix + number + rest, out);
            }
        }
    }

    private static String setting(String var, String value) {
        return var + "='" + value + "'";
    }

    private static String text(Map<String, String> env, String var) {
        String v = env.get(var);
        return v == null || v.isBlank() ? null : v.trim();
    }

    private static Integer integer(Map<String, String> env, String var) {
        String v = text(env, var);
        if (v == null) {
            return null;
        }
        try {
            return Integer.parseInt(v);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(setting(var, env.get(var)) + " is not an integer");
        }
    }

    private static Integer positive(Map<String, String> env, String var) {
        Integer v = integer(env, var);
        if (v != null && v < 1) {
            throw new IllegalArgumentException(setting(var, env.get(var)) + " must be >= 1");
        }
        return v;
    }

    private static Integer nonNegative(Map<String, String> env, String var) {
        Integer v = integer(env, var);
        if (v != null && v < 0) {
            throw new IllegalArgumentException(setting(var, env.get(var)) + " must be >= 0");
        }
        return v;
    }
}
