package org.djlmegatron.bridge;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.util.Arrays;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.engine.Cast;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.pipeline.PipelineRunner;
import org.djlmegatron.pipeline.PipelineSchedule;

/**
 * One pipeline stage's part of the {@code logits} forward: each row of the ids is a micro-batch of
 * Megatron's forward-only schedule, its hidden states travelling between stages by send/recv; the
 * last stage keeps every row's full-vocabulary logits.
 */
final class PipelinedLogits {

    private PipelinedLogits() {}

    /**
     * Logits {@code [batch, seq, vocab]} on the last stage (every rank of its TP group), null on
     * the others. Gradient recording must be off.
     */
    static NDArray run(ProcessGroup pipeline, GPTModel stage, long[] ids, int batch, NDManager manager) {
        int seq = ids.length / batch;
        NDArray[] rows = new NDArray[batch];
        PipelineRunner.StageWork work = new PipelineRunner.StageWork() {
            @Override
            public NDArray forward(int m, int chunk, NDArray input) {
                NDArray row = manager.create(Arrays.copyOfRange(ids, m * seq, (m + 1) * seq), new Shape(1, seq));
                NDArray out = stage.stageOutput(row, input);
                if (!stage.isLastStage()) {
                    return Cast.to(out, stage.activationType());
                }
                rows[m] = stage.gatherLogits(out);
                return null;
            }

            @Override
            public NDArray backward(int m, int chunk, NDArray outputGradient) {
                throw new IllegalStateException("the forward-only schedule has no backward");
            }
        };
        PipelineSchedule schedule = PipelineSchedule.of(pipeline.size(), pipeline.rank(), 1, batch, pipeline.size(),
                true);
        new PipelineRunner(pipeline, stage.activationShape(1, seq), stage.activationType()).run(schedule, work, manager);
        return stage.isLastStage() ? NDArrays.concat(new NDList(rows), 0) : null;
    }
}
