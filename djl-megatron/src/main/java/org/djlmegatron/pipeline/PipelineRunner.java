package org.djlmegatron.pipeline;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import org.djlmegatron.comm.ProcessGroup;

/**
 * Runs a {@link PipelineSchedule} on one pipeline rank: its passes, and the activations and
 * activation gradients they exchange with the neighbouring stages over the pipeline group, in
 * Megatron's pattern. In the 1F1B steady state a rank sends its forward output and receives the
 * matching output gradient as one batched exchange ({@link ProcessGroup#sendRecv}, Megatron's
 * {@code send_forward_recv_backward}), then sends its input gradient and receives the next input
 * the same way ({@code send_backward_recv_forward}): with rendezvous sends (NCCL, or the thread
 * backend's strict mode) no rank waits on a neighbour that waits on it.
 *
 * <p>Interleaved schedules ({@code chunks > 1}) follow Megatron's
 * {@code forward_backward_pipelining_with_interleaving}: after each pass (each forward and
 * backward pair in the steady state) one batched exchange
 * ({@link ProcessGroup#batchSendRecv}) sends what the pass produced and receives what a later
 * pass needs, queued per model chunk; chunk {@code c} of rank {@code r} is virtual stage
 * {@code c p + r}, so activations travel around the ring of pipeline ranks.
 */
public final class PipelineRunner {

    /** One stage's passes; a rank's work for its model chunk. */
    public interface StageWork {
        /**
         * The forward of micro-batch {@code microBatch}: {@code input} is null on the first stage
         * (which reads the micro-batch itself); returns the activation for the next stage, or
         * null on the last stage (which keeps its loss).
         */
        NDArray forward(int microBatch, int chunk, NDArray input);

        /**
         * The backward of micro-batch {@code microBatch}: {@code outputGradient} is null on the
         * last stage (it starts from its loss); returns the gradient of its input, or null on
         * the first stage.
         */
        NDArray backward(int microBatch, int chunk, NDArray outputGradient);
    }

    private final ProcessGroup pipeline;
    private final Shape activation;
    private final DataType dataType;

    /**
     * @param pipeline the pipeline-parallel group (group rank = stage)
     * @param activation the shape of what stages exchange (the same in both directions)
     * @param dataType its data type
     */
    public PipelineRunner(ProcessGroup pipeline, Shape activation, DataType dataType) {
        this.pipeline = pipeline;
        this.activation = activation;
        this.dataType = dataType;
    }

    /** Runs every pass of {@code schedule} on this rank; received arrays live on {@code manager}. */
    public void run(PipelineSchedule schedule, StageWork work, NDManager manager) {
        if (schedule.pipelineSize() != pipeline.size() || schedule.rank() != pipeline.rank()) {
            throw new IllegalArgumentException("schedule for rank " + schedule.rank() + " of " + schedule.pipelineSize()
                    + " run on rank " + pipeline.rank() + " of pipeline group " + pipeline.name()
                    + " (size " + pipeline.size() + ")");
        }
        if (schedule.chunks() > 1) {
            new InterleavedPass(schedule, work, manager).run();
        } else {
            new Pass(schedule, work, manager).run();
        }
    }

    /** One step's state: the schedule's steps, consumed in order, must match the exchange pattern. */
    private final class Pass {
        private final PipelineSchedule schedule;
        private final StageWork work;
        private final NDManager manager;
        private final Iterator<PipelineSchedule.Step> steps;
        private final boolean first;
        private final boolean last;
        private final int prev;
        private final int next;

        Pass(PipelineSchedule schedule, StageWork work, NDManager manager) {
            this.schedule = schedule;
            this.work = work;
            this.manager = manager;
            this.steps = schedule.steps().iterator();
            int r = pipeline.rank();
            first = r == 0;
            last = r == pipeline.size() - 1;
            prev = r - 1;
            next = r + 1;
        }

        void run() {
            int total = schedule.microBatches();
            int warmup = schedule.warmup();
            int remaining = total - warmup;
            for (int i = 0; i < warmup; i++) {
                NDArray out = forward(receiveForward());
                sendForward(out);
            }
            NDArray input = remaining > 0 ? receiveForward() : null;
            for (int i = 0; i < remaining; i++) {
                boolean lastIteration = i == remaining - 1;
                NDArray out = forward(input); // forward-only schedules have no steady state
                NDArray outputGradient = last ? null
                        : pipeline.sendRecv(out, next, manager, activation, dataType, next);
                NDArray inputGradient = backward(outputGradient);
                if (lastIteration) {
                    input = null;
                    sendBackward(inputGradient);
                } else {
                    input = first ? null
                            : pipeline.sendRecv(inputGradient, prev, manager, activation, dataType, prev);
                }
            }
            for (int i = 0; i < warmup && !schedule.forwardOnly(); i++) {
                NDArray outputGradient = last ? null : pipeline.recv(manager, activation, dataType, next);
                sendBackward(backward(outputGradient));
            }
            if (steps.hasNext()) {
                throw new IllegalStateException("pipeline rank " + pipeline.rank() + " left passes unrun: " + steps.next());
            }
        }

        private NDArray forward(NDArray input) {
            PipelineSchedule.Step s = expect(true);
            return work.forward(s.microBatch(), s.chunk(), input);
        }

        private NDArray backward(NDArray outputGradient) {
            PipelineSchedule.Step s = expect(false);
            return work.backward(s.microBatch(), s.chunk(), outputGradient);
        }

        private PipelineSchedule.Step expect(boolean forward) {
            PipelineSchedule.Step s = steps.hasNext() ? steps.next() : null;
            if (s == null || s.forward() != forward) {
                throw new IllegalStateException("pipeline rank " + pipeline.rank() + " expected a "
                        + (forward ? "forward" : "backward") + " but the schedule has " + s);
            }
            return s;
        }

        private NDArray receiveForward() {
            return first ? null : pipeline.recv(manager, activation, dataType, prev);
        }

        private void sendForward(NDArray out) {
            if (!last) {
                pipeline.send(out, next);
            }
        }

        private void sendBackward(NDArray inputGradient) {
            if (!first) {
                pipeline.send(inputGradient, prev);
            }
        }
    }

    /**
     * One step of the interleaved schedule, as Megatron runs it: warm-up forwards, each followed by
     * an exchange that sends its output on and receives the next forward's input (the last
     * warm-up exchange also receives the first output gradient); in the steady state one
     * forward, one backward, then one four-way exchange; cool-down backwards with two-way
     * exchanges. Which exchanges receive follows Megatron's rules (the first rank is ahead of
     * the last by {@code p - 1} passes), so a neighbour's sends and this rank's receives pair up.
     */
    private final class InterleavedPass {
        private final PipelineSchedule schedule;
        private final StageWork work;
        private final NDManager manager;
        private final Iterator<PipelineSchedule.Step> steps;
        private final List<int[]> table;
        private final int chunks;
        private final boolean firstRank;
        private final boolean lastRank;
        private final int prev;
        private final int next;
        /** Per chunk, received inputs and output gradients in the order their passes run. */
        private final List<ArrayDeque<NDArray>> inputs = new ArrayList<>();
        private final List<ArrayDeque<NDArray>> outputGradients = new ArrayList<>();

        InterleavedPass(PipelineSchedule schedule, StageWork work, NDManager manager) {
            this.schedule = schedule;
            this.work = work;
            this.manager = manager;
            this.steps = schedule.steps().iterator();
            this.table = schedule.table();
            this.chunks = schedule.chunks();
            int p = pipeline.size();
            int r = pipeline.rank();
            firstRank = r == 0;
            lastRank = r == p - 1;
            prev = (r - 1 + p) % p;
            next = (r + 1) % p;
            for (int c = 0; c < chunks; c++) {
                inputs.add(new ArrayDeque<>());
                outputGradients.add(new ArrayDeque<>());
            }
        }

        /** Chunk of the k-th forward (Python's modulo, as Megatron indexes its table). */
        private int forwardChunk(int k) {
            return table.get(Math.floorMod(k, table.size()))[1];
        }

        private int backwardChunk(int k) {
            return chunks - 1 - forwardChunk(k);
        }

        /**
         * Megatron's {@code recv_tensor_from_previous_stage}: the chunk whose input (forward) or
         * output gradient (backward) arrives from the upstream rank in the exchange after this
         * rank's {@code k}-th pass of that direction, or -1 when nothing arrives. The leading rank
         * (the first in forward, the last in backward) is {@code p - 1} passes ahead of the rank
         * that feeds it around the ring, so what arrives is that rank's pass {@code k - (p - 1)}'s
         * output, for the next chunk; for the others it is the input of their pass {@code k + 1}.
         * This holds for any micro-batch group size (with groups of p it equals the older rule
         * "receive unless the next pass is on the first chunk").
         */
        private int arrivingChunk(int k, boolean forward) {
            boolean leading = forward ? firstRank : lastRank;
            if (!leading) {
                return chunkOf(k + 1, forward);
            }
            int p = pipeline.size();
            if (k < p - 1) {
                return -1; // the rank feeding it has produced nothing yet
            }
            int chunk = chunkOf(k - (p - 1), forward);
            if (chunk == (forward ? chunks - 1 : 0)) {
                return -1; // the last virtual stage (first, in backward) sends nothing on
            }
            return forward ? chunk + 1 : chunk - 1;
        }

        private int chunkOf(int k, boolean forward) {
            return forward ? forwardChunk(k) : backwardChunk(k);
        }

        private boolean firstVirtualStage(int chunk) {
            return firstRank && chunk == 0;
        }

        private boolean lastVirtualStage(int chunk) {
            return lastRank && chunk == chunks - 1;
        }

        void run() {
            int total = table.size();
            int warmup = schedule.warmup();
            int remaining = total - warmup;
            boolean allWarmup = warmup == total;
            if (!firstRank) {
                inputs.get(0).add(pipeline.recv(manager, activation, dataType, prev));
            }
            for (int k = 0; k < warmup; k++) {
                int chunk = forwardChunk(k);
                NDArray out = forward(chunk);
                if (lastVirtualStage(chunk)) {
                    out = null;
                }
                int nextChunk = arrivingChunk(k, true);
                boolean recvPrev = nextChunk >= 0 && k != total - 1;
                boolean recvNext = k == warmup - 1 && !schedule.forwardOnly() && !allWarmup && !lastRank;
                NDArray[] got = exchange(out, null, recvPrev, recvNext);
                if (recvPrev) {
                    inputs.get(nextChunk).add(got[0]);
                }
                if (recvNext) {
                    outputGradients.get(chunks - 1).add(got[1]);
                }
            }
            for (int k = 0; k < remaining; k++) {
                int forwardK = k + warmup;
                int fChunk = forwardChunk(forwardK);
                NDArray out = forward(fChunk);
                int bChunk = backwardChunk(k);
                NDArray inputGradient = backward(bChunk);
                if (lastVirtualStage(fChunk)) {
                    out = null;
                }
                if (firstVirtualStage(bChunk)) {
                    inputGradient = null;
                }
                int nextFChunk = arrivingChunk(forwardK, true);
                int nextBChunk = arrivingChunk(k, false);
                boolean recvPrev = nextFChunk >= 0 && k != remaining - 1;
                boolean recvNext = nextBChunk >= 0;
                NDArray[] got = exchange(out, inputGradient, recvPrev, recvNext);
                if (recvPrev) {
                    inputs.get(nextFChunk).add(got[0]);
                }
                if (recvNext) {
                    outputGradients.get(nextBChunk).add(got[1]);
                }
            }
            if (!schedule.forwardOnly()) {
                if (allWarmup && !lastRank) {
                    outputGradients.get(chunks - 1).add(pipeline.recv(manager, activation, dataType, next));
                }
                for (int k = remaining; k < total; k++) {
                    int chunk = backwardChunk(k);
                    NDArray inputGradient = backward(chunk);
                    if (firstVirtualStage(chunk)) {
                        inputGradient = null;
                    }
                    int nextChunk = arrivingChunk(k, false);
                    boolean recvNext = nextChunk >= 0 && k != total - 1;
                    NDArray[] got = exchange(null, inputGradient, false, recvNext);
                    if (recvNext) {
                        outputGradients.get(nextChunk).add(got[1]);
                    }
                }
            }
            if (steps.hasNext()) {
                throw new IllegalStateException("pipeline rank " + pipeline.rank() + " left passes unrun: " + steps.next());
            }
        }

        private NDArray forward(int chunk) {
            PipelineSchedule.Step s = expect(true, chunk);
            NDArray input = firstVirtualStage(chunk) ? null : take(inputs.get(chunk), s, "input");
            return work.forward(s.microBatch(), s.chunk(), input);
        }

        private NDArray backward(int chunk) {
            PipelineSchedule.Step s = expect(false, chunk);
            NDArray outputGradient = lastVirtualStage(chunk) ? null : take(outputGradients.get(chunk), s, "output gradient");
            return work.backward(s.microBatch(), s.chunk(), outputGradient);
        }

        private NDArray take(ArrayDeque<NDArray> queue, PipelineSchedule.Step s, String what) {
            NDArray x = queue.poll();
            if (x == null) {
                throw new IllegalStateException("pipeline rank " + pipeline.rank() + " has no " + what + " for " + s);
            }
            return x;
        }

        private PipelineSchedule.Step expect(boolean forward, int chunk) {
            PipelineSchedule.Step s = steps.hasNext() ? steps.next() : null;
            if (s == null || s.forward() != forward || s.chunk() != chunk) {
                throw new IllegalStateException("pipeline rank " + pipeline.rank() + " expected a "
                        + (forward ? "forward" : "backward") + " of chunk " + chunk + " but the schedule has " + s);
            }
            return s;
        }

        /**
         * Megatron's {@code send_forward_backward_recv_forward_backward}: {@code out} to the next
         * rank, {@code inputGradient} to the previous one, and receives from the previous (an
         * input, {@code [0]}) and the next (an output gradient, {@code [1]}) as asked, batched.
         * Sends go forward first and receives come from the previous rank first on every rank,
         * so when the two neighbours are one rank (P = 2) its messages still pair in order.
         */
        private NDArray[] exchange(NDArray out, NDArray inputGradient, boolean recvPrev, boolean recvNext) {
            int sendCount = (out != null ? 1 : 0) + (inputGradient != null ? 1 : 0);
            NDArray[] sends = new NDArray[sendCount];
            int[] dsts = new int[sendCount];
            int i = 0;
            if (out != null) {
                sends[i] = out;
                dsts[i++] = next;
            }
            if (inputGradient != null) {
                sends[i] = inputGradient;
                dsts[i] = prev;
            }
            int[] srcs = recvPrev && recvNext ? new int[] {prev, next} : recvPrev ? new int[] {prev}
                    : recvNext ? new int[] {next} : new int[0];
            NDArray[] got = sends.length == 0 && srcs.length == 0 ? new NDArray[0]
                    : pipeline.batchSendRecv(sends, dsts, manager, activation, dataType, srcs);
            NDArray[] result = new NDArray[2];
            int j = 0;
            if (recvPrev) {
                result[0] = got[j++];
            }
            if (recvNext) {
                result[1] = got[j];
            }
            return result;
        }
    }
}
