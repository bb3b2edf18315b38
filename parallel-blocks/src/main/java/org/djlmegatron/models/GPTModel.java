package org.djlmegatron.models;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.ndarray.types.SparseFormat;
import ai.djl.nn.Parameter;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.nn.BlockList;
import org.djlmegatron.context.ContextParallel;
import org.djlmegatron.nn.ColumnParallelLinear;
import org.djlmegatron.nn.Norm;
import org.djlmegatron.nn.PositionalDropout;
import org.djlmegatron.nn.ParallelBlock;
import org.djlmegatron.nn.ShardLayout;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.nn.VocabParallelCrossEntropy;
import org.djlmegatron.nn.VocabParallelEmbedding;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.training.model.PipelineStageModel;
import org.djlmegatron.training.model.TrainableParameter;
import org.djlmegatron.transformer.AttentionBackend;
import org.djlmegatron.context.DocumentLayout;
import org.djlmegatron.context.DocumentMasking;
import org.djlmegatron.transformer.KvCache;
import org.djlmegatron.transformer.Recompute;
import org.djlmegatron.transformer.TransformerConfig;
import org.djlmegatron.models.TransformerLayer;

/**
 * A GPT-family decoder (Megatron-Core's {@code GPTModel}): vocab-parallel embedding, learned or
 * rotary positions, pre-norm layers, final norm, vocab-parallel output layer (tied or not).
 * {@link #apply} maps token ids {@code [b, s]} (int64) to this rank's vocabulary slice of the
 * logits {@code [b, s, V/tp]}; {@link #gatherLogits} assembles the full vocabulary.
 * Parameter names are Megatron-Core's state-dict names.
 */
public final class GPTModel extends ParallelBlock implements PipelineStageModel {

    private static final int SEQ_AXIS = 1;

    private final TransformerConfig cfg;
    private final boolean sequenceParallel;
    private final Embedding embedding;
    private final VocabParallelEmbedding wordEmbeddings;
    private final Parameter positionEmbeddings;
    private final List<TransformerLayer> layers = new ArrayList<>();
    private final Norm finalNorm;
    private final ColumnParallelLinear outputLayer;
    private final VocabParallelCrossEntropy crossEntropy;
    private final boolean firstStage;
    private final boolean lastStage;
    private Recompute recompute = Recompute.NONE;
    private boolean layerSegments; // a tape entry after every layer: backward reports each layer when done
    private PositionalDropout embeddingDropout = new PositionalDropout(0, 0);
    private ContextParallel cp;
    private DocumentMasking documentMasking;
    private DocumentLayout documents; // of the micro-batch in progress

    public GPTModel(RankContext ctx, TransformerConfig cfg, boolean sequenceParallel) {
        this(ctx, cfg, sequenceParallel, 0, cfg.numLayers());
    }

    /**
     * One pipeline stage: global layers {@code [firstLayer, endLayer)}, the embedding if it holds
     * layer 0, the final norm and output layer if it holds the last. A last stage without the
     * embedding keeps its own copy of a tied word embedding (Megatron's embedding group), named
     * and so initialised as the first stage's; the trainer keeps the two equal.
     */
    public GPTModel(RankContext ctx, TransformerConfig cfg, boolean sequenceParallel, int firstLayer, int endLayer) {
        super(ctx);
        ctx.grid().validateModel(cfg.numAttentionHeads(), cfg.numQueryGroups(), cfg.vocabSize(),
                cfg.numExperts());
        if (firstLayer < 0 || endLayer > cfg.numLayers() || firstLayer >= endLayer) {
            throw new IllegalArgumentException("stage layers [" + firstLayer + ", " + endLayer + ") outside the model's "
                    + cfg.numLayers() + " layers");
        }
        this.cfg = cfg;
        this.sequenceParallel = sequenceParallel && tp.isParallel();
        this.firstStage = firstLayer == 0;
        this.lastStage = endLayer == cfg.numLayers();
        boolean tiedCopy = lastStage && !firstStage && cfg.tieEmbeddings();
        embedding = firstStage || tiedCopy ? part("embedding", new Embedding(ctx, firstStage)) : null;
        wordEmbeddings = embedding == null ? null : embedding.word;
        positionEmbeddings = embedding == null ? null : embedding.position;
        Decoder decoder = part("decoder", new Decoder(ctx, firstLayer, endLayer));
        finalNorm = decoder.finalNorm;
        outputLayer = cfg.tieEmbeddings() || !lastStage ? null : part("output_layer",
                ColumnParallelLinear.builder(ctx).setInFeatures(cfg.hiddenSize())
                        .setOutFeatures(cfg.vocabSize()).optBias(false).build());
        crossEntropy = new VocabParallelCrossEntropy(tp);
    }

    public TransformerConfig config() {
        return cfg;
    }

    public boolean isSequenceParallel() {
        return sequenceParallel;
    }

    /** Chooses how every layer computes attention (default {@link AttentionBackend#AUTO}). */
    public void setAttentionBackend(AttentionBackend backend) {
        layers.forEach(l -> l.attention().setBackend(backend));
    }

    /** Local logits {@code [b, s, V/tp]} for token ids {@code [b, s]}. */
    @Override
    public NDArray apply(NDArray ids) {
        if (!firstStage || !lastStage) {
            throw new IllegalStateException("apply runs the whole model; this is a pipeline stage (forwardStage)");
        }
        beginDocuments(ids);
        return head(layers(embedChecked(ids)));
    }

    /**
     * Megatron's document masking ({@code --reset-position-ids}, {@code --reset-attention-mask},
     * {@code --eod-mask-loss}; null: off): every forward derives the positions, the document-causal
     * mask and the loss mask from its input ids.
     */
    public void setDocumentMasking(DocumentMasking masking) {
        this.documentMasking = masking != null && masking.active() ? masking : null;
    }

    /** The document layout of the whole-sequence ids about to run, handed to every attention. */
    private void beginDocuments(NDArray ids) {
        documents = documentMasking == null || ids == null ? null : documentMasking.layout(ids);
        useDocuments(documents);
    }

    private void useDocuments(DocumentLayout docs) {
        layers.forEach(l -> l.attention().setDocuments(docs));
    }

    private NDArray maskLabels(NDArray inputs, NDArray labels) {
        return documentMasking == null || labels == null ? labels : documentMasking.maskLabels(inputs, labels);
    }

    private NDArray embedChecked(NDArray ids) {
        long s = ids.getShape().get(1);
        if (sequenceParallel && s % tp.group().size() != 0) {
            throw new IllegalArgumentException("sequence length " + s + " is not divisible by the "
                    + "tensor-parallel size " + tp.group().size() + " (sequence parallelism)");
        }
        if (s > cfg.maxPositionEmbeddings() && positionEmbeddings != null) {
            throw new IllegalArgumentException("sequence length " + s
                    + " exceeds max_position_embeddings " + cfg.maxPositionEmbeddings());
        }
        if (cp != null) {
            ids = cp.localChunks(ids);
            s = ids.getShape().get(1);
            if (sequenceParallel && s % tp.group().size() != 0) {
                throw new IllegalArgumentException("sequence length per context-parallel rank " + s
                        + " is not divisible by the tensor-parallel size " + tp.group().size() + " (sequence parallelism)");
            }
        }
        noteUses(embedding);
        return embed(ids);
    }

    private NDArray layers(NDArray h) {
        for (Recompute.LayerGroup g : recompute.groups(layers.size())) {
            DocumentLayout docs = documents; // a recomputation in backward runs with this micro-batch's
            h = g.checkpointed() ? tape().checkpoint(h, in -> {
                useDocuments(docs);
                return applyLayers(g, in);
            }) : applyLayers(g, h);
        }
        return h;
    }

    /** Final norm and output layer: local logits. */
    private NDArray head(NDArray h) {
        noteUses(finalNorm);
        if (outputLayer != null) {
            noteUses(outputLayer);
        }
        NDArray x = finalNorm.apply(h);
        if (tp.isParallel()) {
            x = tape().cut(x, sequenceParallel
                    ? tp.gatherFromSequenceRegion(SEQ_AXIS) : tp.copyToRegion());
        }
        // the segment that reads the output weights (after the cut): ZeRO-3 gathers them before its backward
        noteUses(outputLayer != null ? outputLayer : embedding);
        if (outputLayer != null) {
            return outputLayer.applyInRegion(x);
        }
        return x.getNDArrayInternal().linear(x, value(wordEmbeddings.weight(), x), null)
                .singletonOrThrow();
    }

    private NDArray applyLayers(Recompute.LayerGroup g, NDArray h) {
        for (int i = g.start(); i < g.end(); i++) {
            noteUses(layers.get(i));
            h = layers.get(i).apply(h);
            if (layerSegments) {
                h = tape().function(new NDList(h), in -> new NDList(in.get(0).duplicate()), grads -> grads).get(0);
            }
        }
        return h;
    }

    /**
     * Ends a tape segment after every layer (an identity entry on the residual stream), so that
     * backward, which libtorch runs a segment at a time, reports each layer's parameters as final
     * as soon as it is past them ({@code Tape.onGradientsFinal}): what {@code --overlap-grad-reduce}
     * starts its buckets from. Without it a model with no other entries (TP 1, no recomputation) is
     * one segment, whose parameters all become final at the end of backward. Same gradients (the
     * layer input's contributions are summed in the later segment, then passed through).
     */
    public void setLayerSegments(boolean on) {
        layerSegments = on;
    }

    /**
     * Tells the tape that {@code block}'s parameters take part in the current segment, so its
     * gradient-final listeners learn when backward is done with them (overlapped reduction).
     */
    private void noteUses(ParallelBlock block) {
        for (ShardedParameter sp : block.parameters()) {
            tape().noteUse(sp.parameter());
        }
    }

    /**
     * Context parallelism ({@code --context-parallel-size}; null: off). {@link #apply} then takes the
     * whole sequence and returns the logits of this rank's two chunks ({@link ContextParallel}), and
     * the loss is this rank's share of the sequence's mean. Dropout masks are drawn by the tokens'
     * global sequence indices, so they are the one-rank masks' elements.
     */
    public void setContextParallel(ContextParallel cp) {
        this.cp = cp;
        layers.forEach(l -> l.attention().setContextParallel(cp));
    }

    /** Activation recomputation ({@code --recompute-granularity} and friends; a last uniform group may be shorter). */
    public void setRecompute(Recompute recompute) {
        this.recompute = recompute;
        layers.forEach(l -> l.setRecompute(recompute));
    }

    /** MoE routing, balancing losses and dispatcher of every MoE layer. */
    public void setMoe(org.djlmegatron.moe.MoeConfig moe) {
        layers.stream().filter(l -> l.moe() != null).forEach(l -> l.moe().setConfig(moe));
    }

    /** The MoE layers, in layer order (empty for a dense model). */
    public List<org.djlmegatron.moe.MoeLayer> moeLayers() {
        return layers.stream().filter(l -> l.moe() != null).map(TransformerLayer::moe).toList();
    }

    /** Balance figures of each MoE layer, in layer order (empty for a dense model). */
    public List<org.djlmegatron.moe.MoeStats> moeStats() {
        return layers.stream().filter(l -> l.moe() != null).map(l -> l.moe().stats()).toList();
    }

    public Recompute recompute() {
        return recompute;
    }

    /**
     * Dropout: {@code hidden} after the embeddings and on each attention and MLP output,
     * {@code attention} on the attention probabilities; masks are functions of {@code seed} and the
     * tape's {@link org.djlmegatron.autograd.RandomKey} (see {@link PositionalDropout}).
     */
    public void setDropout(double hidden, double attention, long seed) {
        embeddingDropout = new PositionalDropout(hidden, seed);
        PositionalDropout h = new PositionalDropout(hidden, seed);
        PositionalDropout a = new PositionalDropout(attention, seed);
        layers.forEach(l -> l.setDropout(h, a));
    }

    /** Embedding output: replicated {@code [b, s, h]}, or this rank's sequence slice under SP. */
    private NDArray embed(NDArray ids) {
        NDArray partial = wordEmbeddings.partial(ids);
        long s = ids.getShape().get(1);
        NDArray h;
        long posStart = 0;
        long posLen = s;
        if (sequenceParallel) {
            h = tape().cut(partial, tp.reduceScatterToSequenceRegion(SEQ_AXIS));
            posLen = s / tp.group().size();
            posStart = posLen * tp.group().rank();
        } else {
            h = tp.reduceFromRegion(partial);
        }
        if (positionEmbeddings != null) {
            // a lookup (not a slice of the weight) so the result lives in the step's manager
            NDArray positions = documents != null && documents.resetsPositions()
                    ? documents.positionIds(java.util.Arrays.copyOfRange(cp != null ? cp.positions(s)
                            : DocumentLayout.range(s), (int) posStart, (int) (posStart + posLen)))
                    : cp != null
                    ? ids.getManager().create(java.util.Arrays.copyOfRange(cp.positions(s),
                            (int) posStart, (int) (posStart + posLen)))
                    : ids.getManager().arange((int) posStart, (int) (posStart + posLen), 1, DataType.INT64);
            h = h.add(positions.getNDArrayInternal()
                    .embedding(positions, value(positionEmbeddings, positions), SparseFormat.DENSE)
                    .singletonOrThrow());
        }
        return cp == null ? embeddingDropout.hidden(h, tape().key(), 0, PositionalDropout.Site.EMBEDDING, posStart)
                : embeddingDropout.hidden(h, tape().key(), 0, PositionalDropout.Site.EMBEDDING,
                        java.util.Arrays.copyOfRange(cp.positions(s), (int) posStart, (int) (posStart + posLen)));
    }

    /**
     * Decoding with a KV cache: local logits {@code [b, s, V/tp]} of tokens {@code ids [b, s]} at
     * positions {@code cache.length() .. cache.length()+s-1}, every earlier position read from the
     * cache; this step's keys and values are added to it. Equal to {@link #apply} on the whole
     * sequence at those positions. Inference only (no tape), without sequence parallelism.
     */
    public NDArray forwardCached(NDArray ids, KvCache cache) {
        long s = ids.getShape().get(1);
        long start = cache.length();
        if (sequenceParallel) {
            throw new IllegalStateException("decoding with a KV cache needs a model built without sequence parallelism");
        }
        if (ids.getShape().get(0) != cache.batch()) {
            throw new IllegalArgumentException("KV cache holds " + cache.batch() + " rows, ids have "
                    + ids.getShape().get(0));
        }
        if (start + s > cache.capacity()) {
            throw new IllegalArgumentException("positions up to " + (start + s) + " exceed the KV cache capacity "
                    + cache.capacity());
        }
        if (positionEmbeddings != null && start + s > cfg.maxPositionEmbeddings()) {
            throw new IllegalArgumentException("position " + (start + s - 1) + " is beyond max_position_embeddings "
                    + cfg.maxPositionEmbeddings());
        }
        NDArray h = tp.reduceFromRegion(wordEmbeddings.partial(ids));
        if (positionEmbeddings != null) {
            NDArray positions = ids.getManager().arange((int) start, (int) (start + s), 1, DataType.INT64);
            h = h.add(positions.getNDArrayInternal()
                    .embedding(positions, value(positionEmbeddings, positions), SparseFormat.DENSE)
                    .singletonOrThrow());
        }
        for (int i = 0; i < layers.size(); i++) {
            h = layers.get(i).forwardCached(h, cache, i);
        }
        cache.advance(s);
        NDArray x = finalNorm.apply(h);
        if (outputLayer != null) {
            return outputLayer.applyInRegion(x);
        }
        return x.getNDArrayInternal().linear(x, value(wordEmbeddings.weight(), x), null).singletonOrThrow();
    }

    /** Full-vocabulary logits {@code [b, s, V]} from local ones (same on every rank). */
    public NDArray gatherLogits(NDArray localLogits) {
        return tp.gatherFromRegion(localLogits, -1);
    }

    /** Mean cross-entropy of local logits against global labels (negative labels ignored). */
    public NDArray lossFromLogits(NDArray localLogits, NDArray labels) {
        if (cp != null) {
            NDArray local = cp.localChunks(labels);
            return cp.meanLoss(crossEntropy.tokenLosses(localLogits, local), local);
        }
        return crossEntropy.meanLoss(localLogits, labels);
    }

    /**
     * Hugging Face's causal-LM loss: position t predicts token t+1, the last position is ignored,
     * mean over the rest.
     */
    public NDArray causalLmLoss(NDArray ids) {
        return lossFromLogits(apply(ids), shiftLabels(ids));
    }

    /** {@code labels[:, t] = ids[:, t+1]}, and -100 at the last position. */
    public static NDArray shiftLabels(NDArray ids) {
        NDArray next = ids.get(new NDIndex(":, 1:"));
        NDArray pad = ids.getManager().full(new Shape(ids.getShape().get(0), 1), -100, DataType.INT64);
        return next.concat(pad, 1);
    }

    /**
     * Sums, over the tensor-parallel group, the gradients that are partial on each rank
     * (replicated weights that saw only part of the sequence, heads or expert outputs). Call after
     * backward, before clipping and the optimizer step.
     */
    public void reducePartialGradients() {
        if (!tp.isParallel()) {
            return;
        }
        for (ShardedParameter sp : parameters()) {
            if (sp.tpPartialGrad()) {
                try (NDArray g = sp.parameter().getArray().getGradient();
                        NDArray sum = tp.group().allReduce(g, ReduceOp.SUM)) {
                    g.subi(g).addi(sum);
                }
            }
        }
    }

    /**
     * Parameters for the trainer: replicated ones are counted once in norms; weight decay on
     * tensors of rank >= 2 only (biases and norms are not decayed), as Megatron and HF do.
     */
    @Override
    public List<TrainableParameter> trainableParameters() {
        List<TrainableParameter> out = new ArrayList<>();
        for (ShardedParameter sp : parameters()) {
            out.add(new TrainableParameter(sp.name(), sp.parameter().getArray(),
                    sp.layout() == ShardLayout.REPLICATED, sp.fullShape().dimension() >= 2,
                    sp.name().contains(".mlp.experts.local_experts."), sp.tpPartialGrad() && tp.isParallel()));
        }
        return out;
    }

    @Override
    public NDArray loss(NDArray inputs, NDArray labels) {
        return lossFromLogits(apply(inputs), maskLabels(inputs, labels));
    }

    @Override
    public boolean isFirstStage() {
        return firstStage;
    }

    @Override
    public boolean isLastStage() {
        return lastStage;
    }

    /**
     * For token ids {@code [b, s]}: this rank's logits {@code [b, s, vocab / TP]} on the last stage,
     * the hidden states handed to the next stage ({@link #activationShape}) on the others.
     */
    @Override
    public Shape[] getOutputShapes(Shape[] inputShapes) {
        Shape ids = inputShapes[0];
        if (ids.dimension() != 2) {
            throw new IllegalArgumentException("GPTModel takes token ids [batch, seq], found " + ids);
        }
        int rows = Math.toIntExact(ids.get(0));
        int seq = Math.toIntExact(ids.get(1));
        return new Shape[] {lastStage ? new Shape(rows, seq, cfg.vocabSize() / tp.group().size())
                : activationShape(rows, seq)};
    }

    @Override
    public Shape activationShape(int rows, int seq) {
        int local = cp != null ? seq / cp.size() : seq; // under CP, stages exchange this rank's two chunks
        return new Shape(rows, sequenceParallel ? local / tp.group().size() : local, cfg.hiddenSize());
    }

    /**
     * The hidden states' compute dtype ({@code ParallelBlock.value}'s rule: fp16 weights compute in
     * fp32), which stages exchange; a stage casts its output to it (dropout's fp32 masks promote).
     */
    @Override
    public DataType activationType() {
        return parameterType() == DataType.FLOAT16 ? DataType.FLOAT32 : parameterType();
    }

    @Override
    public NDArray forwardStage(NDArray ids, NDArray hidden, NDArray labels) {
        NDArray out = stageOutput(ids, hidden);
        return lastStage ? lossFromLogits(out, maskLabels(ids, labels)) : out;
    }

    /**
     * This stage's forward without the loss: this rank's logits {@code [b, s, vocab / TP]} on the
     * last stage ({@link #gatherLogits} assembles them), the hidden states for the next stage on
     * the others. {@code hidden} is null on the first stage, which embeds {@code ids}.
     */
    public NDArray stageOutput(NDArray ids, NDArray hidden) {
        beginDocuments(ids);
        NDArray h = layers(firstStage ? embedChecked(ids) : hidden);
        return lastStage ? head(h) : h;
    }

    /** The tied word embedding when this stage is the first or the last of several (and not both). */
    @Override
    public List<TrainableParameter> embeddingGroupParameters() {
        if (!cfg.tieEmbeddings() || firstStage == lastStage) {
            return List.of();
        }
        for (TrainableParameter p : trainableParameters()) {
            if (p.name().equals("embedding.word_embeddings.weight")) {
                return List.of(p);
            }
        }
        throw new IllegalStateException("no tied word embedding on a " + (firstStage ? "first" : "last") + " stage");
    }

    @Override
    public boolean countedInNorm(TrainableParameter p) {
        return firstStage || !cfg.tieEmbeddings() || !p.name().equals("embedding.word_embeddings.weight");
    }

    @Override
    public void reduceTensorParallelGradients() {
        reducePartialGradients();
    }

    /** Zeroes every parameter gradient (before the next accumulation). */
    public void zeroGradients() {
        for (ShardedParameter sp : parameters()) {
            NDArray a = sp.parameter().getArray();
            if (a.hasGradient()) {
                try (NDArray g = a.getGradient()) { // a new handle on the shared gradient
                    g.subi(g);
                }
            }
        }
    }

    /** {@code embedding.*}: word embeddings and, for learned positions, position embeddings. */
    private final class Embedding extends ParallelBlock {
        final VocabParallelEmbedding word;
        final Parameter position;

        Embedding(RankContext ctx, boolean withPositions) {
            super(ctx);
            word = part("word_embeddings",
                    new VocabParallelEmbedding(ctx, cfg.vocabSize(), cfg.hiddenSize()));
            position = withPositions && cfg.positionEmbedding() == TransformerConfig.PositionEmbedding.LEARNED_ABSOLUTE
                    ? part("position_embeddings", new PositionTable(ctx)).weight
                    : null;
        }

        @Override
        public NDArray apply(NDArray ids) {
            return embed(ids);
        }
    }

    /** {@code embedding.position_embeddings.weight}: replicated [max_positions, hidden]. */
    private final class PositionTable extends ParallelBlock {
        final Parameter weight;

        PositionTable(RankContext ctx) {
            super(ctx);
            weight = param("weight", new Shape(cfg.maxPositionEmbeddings(), cfg.hiddenSize()),
                    ShardLayout.REPLICATED, sequenceParallel, ShardedParameter.Init.NORMAL);
        }

        @Override
        public NDArray apply(NDArray x) {
            throw new UnsupportedOperationException("used by the embedding");
        }
    }

    /** {@code decoder.layers.N.*} and {@code decoder.final_layernorm}. */
    private final class Decoder extends ParallelBlock {
        final Norm finalNorm;

        Decoder(RankContext ctx, int firstLayer, int endLayer) {
            super(ctx);
            BlockList<TransformerLayer> list = part("layers", new BlockList<>(ctx));
            for (int i = firstLayer; i < endLayer; i++) {
                layers.add(list.add(i, new TransformerLayer(ctx, cfg, sequenceParallel, i)));
            }
            finalNorm = lastStage ? part("final_layernorm", new Norm(ctx, cfg.normalization(), cfg.hiddenSize(),
                    cfg.normEpsilon(), sequenceParallel)) : null;
        }

        @Override
        public NDArray apply(NDArray h) {
            throw new UnsupportedOperationException("applied by GPTModel");
        }
    }
}
