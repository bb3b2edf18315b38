package org.djlmegatron.pipeline;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.Iterator;
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
 * <p>Interleaved schedules ({@code chunks > 1}) are not run yet: their order is computed
 * ({@link PipelineSchedule}) but their exchanges (Megatron's four-way batched exchange) are not
 * written; {@link #run} refuses them.
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
            throw new UnsupportedOperationException("the interleaved schedule's exchanges are not implemented yet ("
                    + schedule.chunks() + " model chunks per rank)");
        }
        new Pass(schedule, work, manager).run();
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
}
