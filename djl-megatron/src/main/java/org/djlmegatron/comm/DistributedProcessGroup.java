package org.djlmegatron.comm;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * A {@link ProcessGroup} whose members live in several JVMs ("nodes"), each running some of them
 * as threads. Built by {@code launch.DistributedWorld} for every group that spans nodes; groups inside
 * one JVM are {@link ThreadProcessGroup}s.
 *
 * <p>Every member's contribution reaches every member that needs it: members in the same JVM
 * read each other's inputs in place, as in a {@link ThreadProcessGroup}; the other nodes receive
 * the bytes over the TCP links of the {@link NodeMesh}, framed with the group id, the call's
 * sequence number, the sender and its call signature. Each member then computes its own result
 * with exactly the code a {@link ThreadProcessGroup} runs, in group-rank order, so the results
 * are bit-identical to the thread backend's for the same inputs. A call's signatures are checked
 * on every node, so mismatched calls fail on every member.
 *
 * <p>Timeouts, peer disconnects and remote failures fail every waiting call with a
 * {@link CollectiveException} naming the group, the rank, the operation and, where one is
 * involved, the other node.
 */
public final class DistributedProcessGroup extends GroupMember {

    private DistributedProcessGroup(GroupCommunicator comm, int rank) {
        super(comm, rank);
    }

    /**
     * Creates this JVM's members of one group.
     *
     * @param name the group's name for error messages
     * @param globalRanks the global ranks of the members, in group-rank order
     * @param nodes per member, the node it lives on
     * @param groupId the group's id, the same on every node
     * @param mesh the links to the other nodes (this JVM is {@code mesh.self()})
     * @param timeout the limit for every wait inside a call
     * @return one entry per member: the member's handle if it lives in this JVM, else null
     */
    public static List<DistributedProcessGroup> newGroup(String name, int[] globalRanks, int[] nodes, int groupId,
            NodeMesh mesh, Duration timeout) {
        GroupCommunicator comm =
                new GroupCommunicator(name, globalRanks, timeout, groupId, nodes, mesh.self(), mesh);
        List<DistributedProcessGroup> members = new ArrayList<>(globalRanks.length);
        for (int i = 0; i < globalRanks.length; i++) {
            members.add(comm.isLocal(i) ? new DistributedProcessGroup(comm, i) : null);
        }
        return Collections.unmodifiableList(members);
    }

    @Override
    public String toString() {
        return "DistributedProcessGroup[" + name() + ", rank " + rank() + "]";
    }
}
