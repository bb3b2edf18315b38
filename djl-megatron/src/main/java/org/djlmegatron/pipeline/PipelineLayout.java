package org.djlmegatron.pipeline;

/**
 * Which decoder layers each pipeline stage (and, interleaved, each model chunk) holds, as
 * Megatron-LM splits them: evenly ({@code --num-layers} / ({@code p} x {@code v}) per virtual
 * stage; chunk {@code c} of rank {@code r} is virtual stage {@code c p + r}), or unevenly with
 * {@code --decoder-first-pipeline-num-layers} / {@code --decoder-last-pipeline-num-layers} (the
 * remaining layers split evenly over the other stages). Layers are numbered globally.
 */
public final class PipelineLayout {

    private final int numLayers;
    private final int pipelineSize;
    private final int chunks;
    private final int[] stageStart; // per virtual stage (c * p + r), and numLayers at the end

    private PipelineLayout(int numLayers, int pipelineSize, int chunks, int[] stageStart) {
        this.numLayers = numLayers;
        this.pipelineSize = pipelineSize;
        this.chunks = chunks;
        this.stageStart = stageStart;
    }

    /**
     * Validates and builds the split; every refusal names the flags and the numbers.
     *
     * @param firstStageLayers {@code --decoder-first-pipeline-num-layers}, or null
     * @param lastStageLayers {@code --decoder-last-pipeline-num-layers}, or null
     */
    public static PipelineLayout of(int numLayers, int pipelineSize, int chunks, Integer firstStageLayers,
            Integer lastStageLayers) {
        if (pipelineSize < 1 || chunks < 1) {
            throw new IllegalArgumentException("--pipeline-model-parallel-size " + pipelineSize
                    + " and --virtual-pipeline-model-parallel-size " + chunks + " must be >= 1");
        }
        boolean uneven = firstStageLayers != null || lastStageLayers != null;
        if (uneven && pipelineSize == 1) {
            throw new IllegalArgumentException("--decoder-first/last-pipeline-num-layers need --pipeline-model-parallel-size > 1");
        }
        if (uneven && chunks > 1) {
            throw new IllegalArgumentException("--decoder-first/last-pipeline-num-layers with "
                    + "--virtual-pipeline-model-parallel-size " + chunks + " is not supported");
        }
        if (!uneven) {
            int virtualStages = pipelineSize * chunks;
            if (numLayers % virtualStages != 0) {
                throw new IllegalArgumentException("--num-layers " + numLayers + " is not divisible by --pipeline-model-parallel-size "
                        + pipelineSize + (chunks > 1 ? " x --virtual-pipeline-model-parallel-size " + chunks : "")
                        + " = " + virtualStages);
            }
            int[] start = new int[virtualStages + 1];
            for (int v = 0; v <= virtualStages; v++) {
                start[v] = v * (numLayers / virtualStages);
            }
            return new PipelineLayout(numLayers, pipelineSize, chunks, start);
        }
        int fixed = 0;
        int free = pipelineSize;
        for (Integer n : new Integer[] {firstStageLayers, lastStageLayers}) {
            if (n != null) {
                if (n < 1) {
                    throw new IllegalArgumentException("--decoder-first/last-pipeline-num-layers must be >= 1, got " + n);
                }
                fixed += n;
                free--;
            }
        }
        int rest = numLayers - fixed;
        if (rest < 0 || (free == 0 && rest != 0) || (free > 0 && (rest == 0 || rest % free != 0))) {
            throw new IllegalArgumentException("--num-layers " + numLayers + " cannot be split over --pipeline-model-parallel-size "
                    + pipelineSize + " with --decoder-first-pipeline-num-layers " + firstStageLayers
                    + " and --decoder-last-pipeline-num-layers " + lastStageLayers + ": the other " + free
                    + " stage(s) would share " + rest + " layer(s) unevenly or not at all");
        }
        int[] start = new int[pipelineSize + 1];
        for (int r = 0; r < pipelineSize; r++) {
            int n;
            if (r == 0 && firstStageLayers != null) {
                n = firstStageLayers;
            } else if (r == pipelineSize - 1 && lastStageLayers != null) {
                n = lastStageLayers;
            } else {
                n = rest / free;
            }
            start[r + 1] = start[r] + n;
        }
        return new PipelineLayout(numLayers, pipelineSize, 1, start);
    }

    /**
     * The split a checkpoint recorded: the number of layers of each virtual stage ({@code c p + r}),
     * {@code layers.length} = {@code pipelineSize} x {@code chunks}, every count at least 1.
     */
    public static PipelineLayout ofCounts(int pipelineSize, int chunks, int[] layers) {
        if (pipelineSize < 1 || chunks < 1 || layers.length != pipelineSize * chunks) {
            throw new IllegalArgumentException("a split over " + pipelineSize + " stage(s) x " + chunks + " chunk(s) needs "
                    + pipelineSize * chunks + " layer counts, got " + java.util.Arrays.toString(layers));
        }
        int[] start = new int[layers.length + 1];
        for (int v = 0; v < layers.length; v++) {
            if (layers[v] < 1) {
                throw new IllegalArgumentException("virtual stage " + v + " of " + java.util.Arrays.toString(layers)
                        + " has no layers");
            }
            start[v + 1] = start[v] + layers[v];
        }
        return new PipelineLayout(start[layers.length], pipelineSize, chunks, start);
    }

    /** Layers of each virtual stage ({@code c p + r}), in virtual-stage order. */
    public int[] layerCounts() {
        int[] out = new int[stageStart.length - 1];
        for (int v = 0; v < out.length; v++) {
            out[v] = stageStart[v + 1] - stageStart[v];
        }
        return out;
    }

    /** The virtual stage ({@code c p + r}) that holds global layer {@code layer}. */
    public int virtualStageOf(int layer) {
        if (layer < 0 || layer >= numLayers) {
            throw new IllegalArgumentException("layer " + layer + " outside the model's " + numLayers + " layers");
        }
        int v = 0;
        while (stageStart[v + 1] <= layer) {
            v++;
        }
        return v;
    }

    /** First global layer of chunk {@code chunk} on pipeline rank {@code rank}. */
    public int firstLayer(int rank, int chunk) {
        return stageStart[chunk * pipelineSize + rank];
    }

    /** One past the last global layer of chunk {@code chunk} on pipeline rank {@code rank}. */
    public int endLayer(int rank, int chunk) {
        return stageStart[chunk * pipelineSize + rank + 1];
    }

    /** Whether every virtual stage holds the same number of layers (Megatron's default split). */
    public boolean isEven() {
        for (int v = 1; v < stageStart.length; v++) {
            if (stageStart[v] - stageStart[v - 1] != stageStart[1]) {
                return false;
            }
        }
        return true;
    }

    public int numLayers() {
        return numLayers;
    }

    public int pipelineSize() {
        return pipelineSize;
    }

    public int chunks() {
        return chunks;
    }

    /** E.g. {@code "stage 0: layers 0-0, stage 1: layers 1-2"}. */
    public String describe() {
        StringBuilder sb = new StringBuilder();
        for (int c = 0; c < chunks; c++) {
            for (int r = 0; r < pipelineSize; r++) {
                if (sb.length() > 0) {
                    sb.append(", ");
                }
                sb.append("rank ").append(r);
                if (chunks > 1) {
                    sb.append(" chunk ").append(c);
                }
                sb.append(": layers ").append(firstLayer(r, c)).append('-').append(endLayer(r, c) - 1);
            }
        }
        return sb.toString();
    }
}
