package org.djlmegatron.comm;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * A {@link ProcessGroup} whose members are threads of one JVM sharing host memory.
 *
 * <p>A collective is a rendezvous: every member deposits a detached view of its input (no copy),
 * waits until all have, computes its own result from the deposits in group-rank order (so every
 * member gets bit-identical results), then waits again until all have read, so that no member
 * returns and overwrites its input while another still reads it. Results are created from the
 * deposits and then attached to the caller's manager; they never require gradients.
 *
 * <p>{@link #send} copies its input into the pair's mailbox and returns at once (an eager send,
 * unless the group was made with strict sends, see {@link #newGroup(String, int[], Duration, boolean)}):
 * the caller may reuse {@code x} immediately, and patterns where every member sends before it
 * receives cannot deadlock. Messages between a pair are received in the order they were sent.
 *
 * <p>Integer {@link ReduceOp#AVG} divides in double precision and truncates toward zero.
 *
 * <p>{@link DistributedProcessGroup} runs the same code for groups that span several JVMs.
 */
public final class ThreadProcessGroup extends GroupMember {

    private ThreadProcessGroup(GroupCommunicator comm, int rank) {
        super(comm, rank);
    }

    /**
     * Creates one group and returns its members, in group-rank order; hand member {@code i} to
     * the thread playing group rank {@code i}.
     *
     * @param name the group's name for error messages, e.g. {@code "tp[0,1]"}
     * @param globalRanks the global ranks of the members, in group-rank order
     * @param timeout the limit for every wait inside a call
     * @return the members
     */
    public static List<ThreadProcessGroup> newGroup(String name, int[] globalRanks, Duration timeout) {
        return newGroup(name, globalRanks, timeout, Boolean.getBoolean(STRICT_SENDS_PROPERTY));
    }

    /**
     * With the system property {@code djlm.comm.strictSends=true}, every thread group made after it is
     * set has strict sends: the training parity harness runs every layout so, so that each schedule
     * and exchange (pipeline, ring attention, expert dispatch) meets NCCL's blocking sends.
     */
    public static final String STRICT_SENDS_PROPERTY = "djlm.comm.strictSends";

    /**
     * {@link #newGroup(String, int[], Duration)}, with sends that return only once the receiver
     * has taken the message when {@code strictSends}: NCCL's blocking send, so that an exchange
     * order that would deadlock on GPUs times out here too (tests of pipeline schedules use it).
     */
    public static List<ThreadProcessGroup> newGroup(String name, int[] globalRanks, Duration timeout,
            boolean strictSends) {
        if (globalRanks.length == 0) {
            throw new IllegalArgumentException("group " + name + " has no members");
        }
        GroupCommunicator comm = new GroupCommunicator(name, globalRanks, timeout);
        comm.strictSends(strictSends);
        List<ThreadProcessGroup> members = new ArrayList<>(globalRanks.length);
        for (int i = 0; i < globalRanks.length; i++) {
            members.add(new ThreadProcessGroup(comm, i));
        }
        return Collections.unmodifiableList(members);
    }

    @Override
    public String toString() {
        return "ThreadProcessGroup[" + name() + ", rank " + rank() + "]";
    }
}
