package org.djlmegatron.pipeline;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.util.List;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.engine.Cast;
import org.djlmegatron.training.model.MicroBatch;
import org.djlmegatron.training.model.PipelineStageModel;

/**
 * Evaluation under pipelining: Megatron's forward-only schedule (every forward in table order,
 * each stage receiving its input and sending its output, no backward). The caller turns gradient
 * recording off.
 */
public final class ForwardOnly {

    private ForwardOnly() {}

    /**
     * The sum of the micro-batch losses, computed on the last stage (in micro-batch order) and
     * broadcast over the pipeline group, so every stage returns it.
     */
    public static double lossSum(ProcessGroup pipeline, PipelineStageModel stage, List<MicroBatch> batches,
            NDManager manager) {
        return lossSum(pipeline, stage, batches, manager, pipeline.size());
    }

    /**
     * As {@link #lossSum(ProcessGroup, PipelineStageModel, List, NDManager)}, interleaved chunks
     * taking micro-batches in groups of {@code groupSize}
     * ({@code --microbatch-group-size-per-virtual-pipeline-stage}).
     */
    public static double lossSum(ProcessGroup pipeline, PipelineStageModel stage, List<MicroBatch> batches,
            NDManager manager, int groupSize) {
        MicroBatch shape = batches.get(0);
        double[] sum = new double[1];
        try (NDManager pass = manager.newSubManager()) {
            PipelineRunner.StageWork work = new PipelineRunner.StageWork() {
                @Override
                public NDArray forward(int m, int chunk, NDArray input) {
                    MicroBatch mb = batches.get(m);
                    PipelineStageModel part = stage.chunk(chunk);
                    NDArray ids = pass.create(mb.inputs(), new Shape(mb.rows(), mb.seq()));
                    NDArray labels = pass.create(mb.labels(), new Shape(mb.rows(), mb.seq()));
                    NDArray out = part.forwardStage(ids, input, labels);
                    if (!part.isLastStage()) {
                        return Cast.to(out, part.activationType());
                    }
                    sum[0] += out.getFloat(); // forwards of the last chunk run in micro-batch order
                    return null;
                }

                @Override
                public NDArray backward(int m, int chunk, NDArray outputGradient) {
                    throw new IllegalStateException("the forward-only schedule has no backward");
                }
            };
            PipelineSchedule schedule = PipelineSchedule.of(pipeline.size(), pipeline.rank(), stage.chunks(),
                    batches.size(), groupSize, true);
            new PipelineRunner(pipeline, stage.activationShape(shape.rows(), shape.seq()), stage.activationType())
                    .run(schedule, work, pass);
            return pipeline.broadcast(pass.create(sum), pipeline.size() - 1).getDouble(0);
        }
    }
}
