package org.djlmegatron.parallel;

import ai.djl.ndarray.NDManager;
import java.util.EnumMap;
import java.util.Map;
import org.djlmegatron.autograd.Tape;
import org.djlmegatron.comm.ProcessGroup;

/**
 * Everything one rank needs: its place in the grid, its process groups, its own NDManager and
 * its autograd tape. One instance per rank; a rank's thread is the only one that uses it.
 */
public final class RankContext implements AutoCloseable {

    private final RankGrid grid;
    private final int rank;
    private final Map<GroupKind, ProcessGroup> groups;
    private final NDManager manager;
    private Tape tape = new Tape();

    public RankContext(RankGrid grid, int rank, Map<GroupKind, ProcessGroup> groups, NDManager manager) {
        this.grid = grid;
        this.rank = rank;
        this.groups = new EnumMap<>(groups);
        this.manager = manager;
    }

    public RankGrid grid() {
        return grid;
    }

    /** Global rank. */
    public int rank() {
        return rank;
    }

    public ProcessGroup group(GroupKind kind) {
        ProcessGroup g = groups.get(kind);
        if (g == null) {
            throw new IllegalStateException("rank " + rank + " has no " + kind + " group");
        }
        return g;
    }

    /**
     * The communicator for overlapped work on {@code kind}'s ranks: {@link GroupKind#DATA_CONTEXT_OVERLAP}
     * for {@link GroupKind#DATA_CONTEXT}, {@link GroupKind#EXPERT_DATA_OVERLAP} for
     * {@link GroupKind#EXPERT_DATA}; the group itself where a context was built without them.
     */
    public ProcessGroup overlapGroup(GroupKind kind) {
        GroupKind twin = switch (kind) {
            case DATA_CONTEXT -> GroupKind.DATA_CONTEXT_OVERLAP;
            case EXPERT_DATA -> GroupKind.EXPERT_DATA_OVERLAP;
            default -> throw new IllegalArgumentException("no overlap communicator for " + kind + " groups");
        };
        ProcessGroup g = groups.get(twin);
        return g != null ? g : group(kind);
    }

    public ProcessGroup tensorGroup() {
        return group(GroupKind.TENSOR);
    }

    public NDManager manager() {
        return manager;
    }

    /**
     * The tape forward code records on now. A rank keeps one tape per forward pass in flight (one
     * per micro-batch and model chunk under pipelining); {@link #useTape} switches between them.
     */
    public Tape tape() {
        return tape;
    }

    /** Makes {@code next} the current tape and returns the one it replaces. */
    public Tape useTape(Tape next) {
        Tape previous = tape;
        tape = next;
        return previous;
    }

    @Override
    public void close() {
        manager.close();
    }
}
