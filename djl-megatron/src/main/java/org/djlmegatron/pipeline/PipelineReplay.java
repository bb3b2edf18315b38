package org.djlmegatron.pipeline;

import ai.djl.ndarray.NDManager;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.djlmegatron.comm.ProcessGroup;

/**
 * A pipeline step replayed on one device per stage: every rank runs its passes in its schedule's
 * order, each taking its measured time, and a pass starts once the rank's previous pass is done
 * and the pass it depends on has finished on the neighbouring stage (the forward of the same
 * micro-batch on the previous virtual stage, the backward on the next one); exchanges are free.
 *
 * <p>Why: thread ranks share the host's cores, so a stage that waits in {@code recv} is often
 * waiting for a core rather than for its neighbour, and the wall-clock wait overstates the
 * bubble. The replay keeps what the schedule itself costs: with equal passes it gives Megatron's
 * {@code (p - 1) / m} exactly ({@code PipelineReplayTest}).
 */
public final class PipelineReplay {

    private final double makespan;
    private final double[] busy;

    private PipelineReplay(double makespan, double[] busy) {
        this.makespan = makespan;
        this.busy = busy;
    }

    /**
     * @param schedules every pipeline rank's schedule, by rank
     * @param seconds per rank, the time of each of its passes in schedule order
     */
    public static PipelineReplay of(List<PipelineSchedule> schedules, double[][] seconds) {
        int p = schedules.size();
        Map<String, Double> done = new HashMap<>(); // "F|B micro-batch virtual-stage" -> finish time
        int[] next = new int[p];
        double[] clock = new double[p];
        double[] busy = new double[p];
        int remaining = 0;
        for (int r = 0; r < p; r++) {
            if (seconds[r].length != schedules.get(r).steps().size()) {
                throw new IllegalArgumentException("rank " + r + ": " + seconds[r].length + " pass times for "
                        + schedules.get(r).steps().size() + " passes");
            }
            remaining += seconds[r].length;
        }
        int virtualStages = p * schedules.get(0).chunks();
        while (remaining > 0) {
            boolean progressed = false;
            for (int r = 0; r < p; r++) {
                while (next[r] < seconds[r].length) {
                    PipelineSchedule.Step s = schedules.get(r).steps().get(next[r]);
                    int stage = s.chunk() * p + r;
                    int from = s.forward() ? stage - 1 : stage + 1;
                    Double ready = from < 0 || from >= virtualStages ? Double.valueOf(0) : done.get(key(s.forward(),
                            s.microBatch(), from));
                    if (ready == null) {
                        break; // its input is not computed yet: another rank goes first
                    }
                    clock[r] = Math.max(clock[r], ready) + seconds[r][next[r]];
                    busy[r] += seconds[r][next[r]];
                    done.put(key(s.forward(), s.microBatch(), stage), clock[r]);
                    next[r]++;
                    remaining--;
                    progressed = true;
                }
            }
            if (!progressed) {
                throw new IllegalStateException("the schedules deadlock: no rank can run its next pass");
            }
        }
        double makespan = 0;
        for (double c : clock) {
            makespan = Math.max(makespan, c);
        }
        return new PipelineReplay(makespan, busy);
    }

    /**
     * Replays one step of this pipeline group: every rank's pass times (this rank's are
     * {@code passSeconds}, in its schedule's order) gathered over {@code pipeline}; a collective,
     * so every rank of the group calls it.
     */
    public static PipelineReplay gather(ProcessGroup pipeline, double[] passSeconds, int chunks, int microBatches,
            int groupSize, NDManager manager) {
        float[] mine = new float[passSeconds.length];
        for (int i = 0; i < mine.length; i++) {
            mine[i] = (float) passSeconds[i];
        }
        float[] all;
        try (NDManager scratch = manager.newSubManager()) {
            all = pipeline.allGather(scratch.create(mine), 0).toFloatArray();
        }
        int p = pipeline.size();
        List<PipelineSchedule> schedules = new ArrayList<>(p);
        double[][] seconds = new double[p][mine.length];
        for (int r = 0; r < p; r++) {
            schedules.add(PipelineSchedule.of(p, r, chunks, microBatches, groupSize, false));
            for (int i = 0; i < mine.length; i++) {
                seconds[r][i] = all[r * mine.length + i];
            }
        }
        return of(schedules, seconds);
    }

    private static String key(boolean forward, int microBatch, int virtualStage) {
        return (forward ? "F" : "B") + microBatch + "@" + virtualStage;
    }

    /** The replayed step's length: until the last rank's last pass. */
    public double makespan() {
        return makespan;
    }

    /** Rank {@code rank}'s compute time (the sum of its passes). */
    public double busy(int rank) {
        return busy[rank];
    }

    /** Rank {@code rank}'s bubble: idle over compute time, Megatron's bubble fraction. */
    public double bubble(int rank) {
        return (makespan - busy[rank]) / busy[rank];
    }
}
