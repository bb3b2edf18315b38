package org.djlmegatron.pipeline;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * The order in which one pipeline rank runs the forward and backward passes of its micro-batches,
 * as Megatron-LM's {@code megatron/core/pipeline_parallel/schedules.py} runs them: no pipelining
 * (every micro-batch's forward then its backward), 1F1B ({@code p - r - 1} warm-up forwards, then
 * one forward and one backward in turn, then the remaining backwards), interleaved 1F1B over
 * {@code v} model chunks per rank (micro-batches in groups of
 * {@code --microbatch-group-size-per-virtual-pipeline-stage}, default {@code p}, each group running
 * through every chunk in turn; {@code 2 (p - r - 1) + (v - 1) * group} warm-up forwards), and
 * forward-only (evaluation: every forward, no backward).
 *
 * <p>Only the order of computation lives here; {@link PipelineRunner} adds the exchanges.
 */
public final class PipelineSchedule {

    /** One pass: the forward or the backward of micro-batch {@code microBatch} through model chunk {@code chunk}. */
    public record Step(boolean forward, int microBatch, int chunk) {
        /** E.g. {@code F3} or, with chunks, {@code F3.1} (micro-batch 3, chunk 1). */
        public String label(boolean withChunk) {
            return (forward ? "F" : "B") + microBatch + (withChunk ? "." + chunk : "");
        }

        @Override
        public String toString() {
            return label(true);
        }
    }

    private final int pipelineSize;
    private final int rank;
    private final int chunks;
    private final int microBatches;
    private final int groupSize;
    private final boolean forwardOnly;
    private final List<Step> steps;
    private final int warmup;

    private PipelineSchedule(int pipelineSize, int rank, int chunks, int microBatches, int groupSize,
            boolean forwardOnly) {
        this.pipelineSize = pipelineSize;
        this.rank = rank;
        this.chunks = chunks;
        this.microBatches = microBatches;
        this.groupSize = groupSize;
        this.forwardOnly = forwardOnly;
        int total = microBatches * chunks;
        int w;
        if (forwardOnly) {
            w = total;
        } else if (pipelineSize == 1) {
            w = 0;
        } else if (chunks == 1) {
            w = pipelineSize - rank - 1;
        } else {
            w = 2 * (pipelineSize - rank - 1) + (chunks - 1) * groupSize;
        }
        this.warmup = Math.min(w, total);
        this.steps = Collections.unmodifiableList(build());
    }

    /**
     * The schedule of pipeline rank {@code rank}.
     *
     * @param pipelineSize {@code --pipeline-model-parallel-size}
     * @param rank this rank's position in the pipeline, {@code 0 <= rank < pipelineSize}
     * @param chunks model chunks per rank ({@code --virtual-pipeline-model-parallel-size}, 1 without)
     * @param microBatches micro-batches per step on this data-parallel rank
     * @param groupSize {@code --microbatch-group-size-per-virtual-pipeline-stage} (Megatron's default: pipelineSize)
     * @param forwardOnly evaluation: forwards only
     * @throws IllegalArgumentException naming the numbers, for a layout Megatron refuses
     */
    public static PipelineSchedule of(int pipelineSize, int rank, int chunks, int microBatches, int groupSize,
            boolean forwardOnly) {
        if (pipelineSize < 1 || rank < 0 || rank >= pipelineSize) {
            throw new IllegalArgumentException("pipeline rank " + rank + " is outside a pipeline of " + pipelineSize);
        }
        if (chunks < 1 || microBatches < 1) {
            throw new IllegalArgumentException("a schedule needs at least one model chunk and one micro-batch, got "
                    + chunks + " chunks and " + microBatches + " micro-batches");
        }
        if (chunks > 1 && pipelineSize == 1) {
            throw new IllegalArgumentException("--virtual-pipeline-model-parallel-size " + chunks
                    + " needs --pipeline-model-parallel-size > 1");
        }
        if (chunks > 1) {
            if (groupSize < pipelineSize || groupSize > microBatches) {
                throw new IllegalArgumentException("--microbatch-group-size-per-virtual-pipeline-stage " + groupSize
                        + " must lie in [pipeline size " + pipelineSize + ", micro-batches " + microBatches + "]");
            }
            int last = microBatches % groupSize;
            if (last > 0 && last < pipelineSize) {
                throw new IllegalArgumentException("interleaved schedule: " + microBatches
                        + " micro-batches in groups of " + groupSize + " leave a last group of " + last
                        + ", fewer than the pipeline size " + pipelineSize
                        + " (Megatron refuses it: the pipeline would stall)");
            }
        }
        return new PipelineSchedule(pipelineSize, rank, chunks, microBatches, chunks > 1 ? groupSize : 1,
                forwardOnly);
    }

    /** Megatron's default: 1F1B, or interleaved with groups of {@code pipelineSize} micro-batches. */
    public static PipelineSchedule training(int pipelineSize, int rank, int chunks, int microBatches) {
        return of(pipelineSize, rank, chunks, microBatches, pipelineSize, false);
    }

    /** The passes in order. */
    public List<Step> steps() {
        return steps;
    }

    /** Forwards run before the first backward (Megatron's {@code num_warmup_microbatches}). */
    public int warmup() {
        return warmup;
    }

    public int pipelineSize() {
        return pipelineSize;
    }

    public int rank() {
        return rank;
    }

    public int chunks() {
        return chunks;
    }

    public int microBatches() {
        return microBatches;
    }

    public boolean forwardOnly() {
        return forwardOnly;
    }

    /**
     * Megatron's schedule table: virtual micro-batch {@code k} (the k-th forward) is
     * {@code (microBatch, chunk)} at index k; groups of {@code groupSize} micro-batches go
     * through every chunk before the next group starts.
     */
    List<int[]> table() {
        List<int[]> table = new ArrayList<>(microBatches * chunks);
        for (int first = 0; first < microBatches; first += groupSize) {
            int end = first + groupSize >= microBatches ? microBatches : first + groupSize;
            for (int c = 0; c < chunks; c++) {
                for (int m = first; m < end; m++) {
                    table.add(new int[] {m, c});
                }
            }
        }
        return table;
    }

    private List<Step> build() {
        List<int[]> table = table();
        int total = table.size();
        List<Step> out = new ArrayList<>(forwardOnly ? total : 2 * total);
        if (forwardOnly) {
            for (int[] e : table) {
                out.add(new Step(true, e[0], e[1]));
            }
            return out;
        }
        if (pipelineSize == 1) { // no pipelining: each micro-batch's forward, then its backward
            for (int[] e : table) {
                out.add(new Step(true, e[0], e[1]));
                out.add(new Step(false, e[0], e[1]));
            }
            return out;
        }
        for (int k = 0; k < warmup; k++) {
            out.add(forward(table, k));
        }
        for (int k = 0; k < total - warmup; k++) {
            out.add(forward(table, k + warmup));
            out.add(backward(table, k));
        }
        for (int k = total - warmup; k < total; k++) {
            out.add(backward(table, k));
        }
        return out;
    }

    private static Step forward(List<int[]> table, int k) {
        return new Step(true, table.get(k)[0], table.get(k)[1]);
    }

    /** The k-th backward runs the chunks in reverse: chunk {@code v - 1 - table chunk}. */
    private Step backward(List<int[]> table, int k) {
        return new Step(false, table.get(k)[0], chunks - 1 - table.get(k)[1]);
    }

    /** The steps as one line, e.g. {@code "F0 F1 B0 F2 B1 B2"}. */
    public String describe() {
        StringBuilder sb = new StringBuilder();
        for (Step s : steps) {
            if (sb.length() > 0) {
                sb.append(' ');
            }
            sb.append(s.label(chunks > 1));
        }
        return sb.toString();
    }
}
