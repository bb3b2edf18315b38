package org.djlmegatron.launch;

import org.djlmegatron.comm.CollectiveException;
import org.djlmegatron.comm.DistributedProcessGroup;
import org.djlmegatron.comm.Frame;
import org.djlmegatron.comm.GroupCommunicator;
import org.djlmegatron.comm.GroupMember;
import org.djlmegatron.comm.LaunchConfig;
import org.djlmegatron.comm.NodeMesh;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.RankDevices;
import org.djlmegatron.comm.Rendezvous;
import org.djlmegatron.comm.ThreadProcessGroup;
import ai.djl.engine.Engine;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.StringJoiner;
import java.util.function.Function;
import java.util.stream.Collectors;
import org.djlmegatron.comm.nccl.JavaCppNccl;
import org.djlmegatron.comm.nccl.Nccl;
import org.djlmegatron.comm.nccl.NcclProcessGroup;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;

/**
 * Runs this JVM's share of a world that spans several JVMs ("nodes"): node {@code k} runs global
 * ranks {@code k * nprocPerNode .. (k + 1) * nprocPerNode - 1} as threads, exactly as
 * {@link LocalWorld} runs all of them in one JVM (which is the one-node case of this class).
 *
 * <p>The nodes meet through a {@link Rendezvous} at {@code MASTER_ADDR:MASTER_PORT} and keep a TCP
 * link between every pair. Groups whose members all live in this JVM are
 * {@link ThreadProcessGroup}s; groups that span nodes are {@link DistributedProcessGroup}s, whose
 * results are bit-identical to the thread backend's. So the same grid gives the same numbers,
 * whatever the number of JVMs it is spread over.
 *
 * <p>Failures: if a rank fails, or a link breaks, every group in this JVM is aborted and every
 * other node is told at once (an abort frame), so ranks blocked in collectives anywhere fail
 * promptly, and {@code run} throws the first failure on every node. When its ranks are done, a
 * node waits until every other node is done too (or fails) before it closes its links, so no
 * node's end looks like a crash to the others and a late failure anywhere fails every node;
 * like {@link LocalWorld}, which waits for its slowest rank, this wait has no deadline, but a
 * node whose process dies closes its links and so fails it at once.
 *
 * <p>When {@link RankDevices} puts the ranks on CUDA, every group a rank sees is a
 * {@link NcclProcessGroup} over the CPU group above (which hands out NCCL's unique id and compares
 * calls); they are aborted with the CPU groups on failure and closed when the run ends.
 */
public final class DistributedWorld {

    private final RankGrid grid;
    private final LaunchConfig launch;
    private final NodeMesh mesh; // null for a single node
    private final Nccl nccl; // null: the ranks use the CPU groups themselves
    private final List<NcclProcessGroup> ncclGroups = new ArrayList<>();
    private final List<GroupCommunicator> communicators = new ArrayList<>();
    private final Map<Integer, GroupCommunicator> distributed = new HashMap<>();
    private final boolean[] nodeDone;
    private RankThreads<?> threads;

    private DistributedWorld(RankGrid grid, LaunchConfig launch, NodeMesh mesh, Nccl nccl) {
        this.grid = grid;
        this.launch = launch;
        this.mesh = mesh;
        this.nccl = nccl;
        this.nodeDone = new boolean[launch.nnodes()];
    }

    /**
     * Joins the world of {@code launch} and runs {@code body} once per rank of this JVM, each on
     * its own thread named {@code "rank-N"} with grad mode on, its own CPU NDManager and a group
     * of every {@link GroupKind}. The rank's context (and its manager) is closed when
     * {@code body} returns: return plain Java values, not NDArrays.
     *
     * @param grid the layout of all ranks; {@code grid.worldSize()} must be
     *     {@code launch.nnodes() * launch.nprocPerNode()}, and must be the same grid on every node
     * @param launch where this JVM sits; its timeout bounds the rendezvous, every wait inside a
     *     collective, and how long {@code run} waits for the other ranks once one has failed
     * @param body the work of one rank
     * @return the values returned by {@code body} for this JVM's ranks, in rank order
     * @throws IllegalArgumentException if the grid does not fit the launch
     * @throws RuntimeException naming the first failure (a rank here: "rank N failed: ...", with
     *     its exception as the cause; or another node's failure, a broken link, a rendezvous
     *     failure: a {@link CollectiveException}), with this JVM's rank failures as suppressed
     *     exceptions
     */
    public static <T> List<T> run(RankGrid grid, LaunchConfig launch, Function<RankContext, T> body) {
        return run(grid, launch, RankDevices.cpu(), body);
    }

    /**
     * {@link #run(RankGrid, LaunchConfig, Function)} with each local rank on the device {@code devices}
     * names; ranks on CUDA communicate through NCCL (loaded here, failing at once if it cannot be).
     */
    public static <T> List<T> run(RankGrid grid, LaunchConfig launch, RankDevices devices,
            Function<RankContext, T> body) {
        boolean cuda = false;
        for (int i = 0; i < launch.nprocPerNode(); i++) {
            cuda |= devices.of(i).isGpu();
        }
        return run(grid, launch, devices, cuda ? JavaCppNccl.load() : null, body);
    }

    /** The above with NCCL groups over {@code nccl} (null: CPU groups), whatever the devices. */
    static <T> List<T> run(RankGrid grid, LaunchConfig launch, RankDevices devices, Nccl nccl,
            Function<RankContext, T> body) {
        if (grid.worldSize() != launch.worldSize()) {
            throw new IllegalArgumentException("the grid has " + grid.worldSize() + " ranks but the launch has "
                    + launch.nnodes() + " node(s) x " + launch.nprocPerNode() + " ranks per node = "
                    + launch.worldSize() + " (" + grid + ")");
        }
        Engine.getInstance(); // load the native library once, before the ranks race to do it
        NodeMesh mesh = null;
        if (launch.nnodes() > 1) {
            Rendezvous.Links links = Rendezvous.join(launch, grid.toString());
            mesh = new NodeMesh(launch.nodeRank(), links.sockets(), links.addresses());
        }
        return new DistributedWorld(grid, launch, mesh, nccl).run(body, devices);
    }

    private <T> List<T> run(Function<RankContext, T> body, RankDevices devices) {
        int nproc = launch.nprocPerNode();
        int[] ranks = new int[nproc];
        Arrays.setAll(ranks, i -> launch.firstRank() + i);
        RankThreads<T> ranksHere = null;
        boolean clean = false;
        try {
            List<Map<GroupKind, ProcessGroup>> groups = buildGroups(devices);
            ranksHere = new RankThreads<>(grid, ranks, groups, this::failedHere, devices);
            synchronized (this) {
                threads = ranksHere;
            }
            if (mesh != null) {
                mesh.start(new Listener());
            }
            ranksHere.start(body);
            List<T> results = ranksHere.await(launch.timeout());
            awaitOtherNodes(ranksHere);
            for (NcclProcessGroup g : ncclGroups) {
                g.close(); // waits for queued device work: its failure is the run's
            }
            clean = true;
            return results;
        } finally {
            if (!clean) {
                ncclGroups.forEach(g -> g.abort("the run failed"));
            }
            if (ranksHere != null && ranksHere.allFinished()) {
                communicators.forEach(GroupCommunicator::dispose);
            }
            if (mesh != null) {
                // after a failure, a short grace: the abort frame is queued first
                mesh.close(clean ? Math.min(launch.timeout().toMillis(), 5_000)
                        : Math.min(launch.timeout().toMillis(), 2_000));
            }
        }
    }

    /** Builds every group of every kind that has a member here, with the backend it needs. */
    private List<Map<GroupKind, ProcessGroup>> buildGroups(RankDevices devices) {
        int nproc = launch.nprocPerNode();
        int self = launch.nodeRank();
        List<Map<GroupKind, ProcessGroup>> perRank = new ArrayList<>(nproc);
        for (int i = 0; i < nproc; i++) {
            perRank.add(new EnumMap<>(GroupKind.class));
        }
        int groupId = 0;
        for (GroupKind kind : GroupKind.values()) {
            for (int[] ranks : grid.groups(kind)) {
                // every node numbers the groups alike: kinds in order, groups in grid order
                int id = groupId++;
                int[] nodes = Arrays.stream(ranks).map(r -> r / nproc).toArray();
                boolean anyHere = Arrays.stream(nodes).anyMatch(n -> n == self);
                if (!anyHere) {
                    continue;
                }
                boolean allHere = Arrays.stream(nodes).allMatch(n -> n == self);
                // Groups of different kinds with the same ranks stay separate communicators:
                // their calls are independent sequences, as in Megatron.
                String name = groupName(kind, ranks);
                List<? extends GroupMember> members = allHere
                        ? ThreadProcessGroup.newGroup(name, ranks, launch.timeout())
                        : DistributedProcessGroup.newGroup(name, ranks, nodes, id, mesh, launch.timeout());
                GroupCommunicator comm = null;
                for (int i = 0; i < ranks.length; i++) {
                    GroupMember member = members.get(i);
                    if (member != null) {
                        int local = ranks[i] - launch.firstRank();
                        ProcessGroup g = member;
                        if (nccl != null) {
                            NcclProcessGroup onDevice = new NcclProcessGroup(member, devices.of(local), launch.timeout(),
                                    nccl, reason -> failedElsewhere(reason, true));
                            ncclGroups.add(onDevice);
                            g = onDevice;
                        }
                        perRank.get(local).put(kind, g);
                        comm = member.communicator();
                    }
                }
                communicators.add(comm);
                if (!allHere) {
                    distributed.put(id, comm);
                }
            }
        }
        return perRank;
    }

    /** A rank here failed first: abort every group here and tell the other nodes. */
    private void failedHere(String reason) {
        abortGroups(reason);
        if (mesh != null) {
            mesh.sendUrgently(new Frame.Abort(reason));
        }
    }

    /**
     * News of a failure from outside the ranks (another node, a broken link, queued NCCL work):
     * the first one is what every rank here fails with.
     */
    private void failedElsewhere(String reason, boolean tellOthers) {
        RankThreads<?> t;
        synchronized (this) {
            t = threads;
            notifyAll();
        }
        // recorded before the abort, so that it, not its echo in the ranks, is reported first
        if (t.failExternally(reason)) {
            abortGroups(reason);
            if (tellOthers && mesh != null) {
                mesh.sendUrgently(new Frame.Abort(reason));
            }
        }
        synchronized (this) {
            notifyAll();
        }
    }

    private void abortGroups(String reason) {
        communicators.forEach(c -> c.abort(reason));
        ncclGroups.forEach(g -> g.abort(reason));
    }

    /**
     * Tells the other nodes this one is done and waits until they all are, or one fails. Like
     * {@link RankThreads#await}, which waits for slow ranks of this JVM as long as none failed,
     * this has no deadline: a node that still computes is not a failure. A node that dies
     * closes its link, which fails the wait at once.
     */
    private void awaitOtherNodes(RankThreads<?> ranksHere) {
        if (mesh == null) {
            return;
        }
        mesh.sendToAll(new Frame.Done());
        synchronized (this) {
            while (true) {
                if (ranksHere.hasFailed()) {
                    throw ranksHere.failure();
                }
                if (pendingNodes().isEmpty()) {
                    return;
                }
                try {
                    wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    String reason = mesh.describe(launch.nodeRank()) + " was interrupted while waiting for "
                            + pendingNodes().stream().map(mesh::describe).collect(Collectors.joining(", "));
                    mesh.sendUrgently(new Frame.Abort(reason));
                    throw new CollectiveException(reason, e);
                }
            }
        }
    }

    private List<Integer> pendingNodes() {
        List<Integer> pending = new ArrayList<>();
        for (int k = 0; k < nodeDone.length; k++) {
            if (k != launch.nodeRank() && !nodeDone[k]) {
                pending.add(k);
            }
        }
        return pending;
    }

    /** What the links deliver. */
    private final class Listener implements NodeMesh.Listener {
        @Override
        public void onContribution(int node, Frame.Contribution frame) {
            group(node, frame.group()).deliver(frame);
        }

        @Override
        public void onMessage(int node, Frame.Message frame) {
            group(node, frame.group()).deliver(frame);
        }

        @Override
        public void onAbort(int node, String reason) {
            failedElsewhere(mesh.describe(node) + " aborted: " + reason, false);
        }

        @Override
        public void onDone(int node) {
            synchronized (DistributedWorld.this) {
                nodeDone[node] = true;
                DistributedWorld.this.notifyAll();
            }
        }

        @Override
        public void onLost(int node, String reason) {
            failedElsewhere(mesh.describe(launch.nodeRank()) + " " + reason, true);
        }

        private GroupCommunicator group(int node, int id) {
            GroupCommunicator comm = distributed.get(id);
            if (comm == null) {
                String reason = "protocol error: " + mesh.describe(node) + " sent a frame for group #" + id
                        + ", which has no members on " + mesh.describe(launch.nodeRank())
                        + " (do all nodes run the same grid?)";
                failedElsewhere(reason, true);
                throw new IllegalStateException(reason);
            }
            return comm;
        }
    }

    /** E.g. {@code "tp[0,1]"}, {@code "dp-cp[0,2,4,6]"}. */
    static String groupName(GroupKind kind, int[] ranks) {
        String prefix = switch (kind) {
            case TENSOR -> "tp";
            case PIPELINE -> "pp";
            case DATA -> "dp";
            case CONTEXT -> "cp";
            case DATA_CONTEXT -> "dp-cp";
            case MODEL -> "mp";
            case EXPERT -> "ep";
            case EXPERT_DATA -> "edp";
            case DATA_CONTEXT_OVERLAP -> "dp-cp-overlap";
            case EXPERT_DATA_OVERLAP -> "edp-overlap";
        };
        StringJoiner j = new StringJoiner(",", "[", "]");
        Arrays.stream(ranks).forEach(r -> j.add(Integer.toString(r)));
        return prefix + j;
    }
}
