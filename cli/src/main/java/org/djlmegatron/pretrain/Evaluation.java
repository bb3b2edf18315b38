package org.djlmegatron.pretrain;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.jni.JniUtils;
import com.google.gson.JsonElement;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.bridge.CheckpointFormat;
import org.djlmegatron.bridge.convert.CheckpointLoader;
import org.djlmegatron.bridge.convert.WeightSource;
import org.djlmegatron.bridge.hf.HfCheckpoint;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.data.InvalidDataException;
import org.djlmegatron.data.TextTokenizer;
import org.djlmegatron.data.batches.MockData;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.training.model.MicroBatch;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * Loss and perplexity of a checkpoint on held-out data, on {@code tp x dp} thread ranks:
 * <ul>
 *   <li>a Megatron dataset ({@code --data-path}, or {@code --mock-data}): the validation batches that
 *       {@code pretrain-gpt}'s evaluation reads with the same flags, averaged the same way (mean over
 *       micro-batches of their mean token loss, then over data-parallel ranks), so the numbers agree;</li>
 *   <li>a JSONL file through a tokenizer: each document's ids and the end-of-document id, concatenated
 *       and cut into windows of {@code seq + 1} tokens (consecutive windows share a token, as Megatron's
 *       samples do; a shorter last window counts too), the mean over every predicted token.</li>
 * </ul>
 */
public final class Evaluation {

    /** What was measured: mean token loss, {@code exp(loss)}, and the tokens it covers. */
    public record Result(double loss, double perplexity, long tokens) {}

    /** The batches of one DP rank, as a list of passes (each pass a list of micro-batches). */
    private interface Batches {
        List<List<MicroBatch>> of(int dpRank, int dpSize);
    }

    /** Told after each evaluation batch of rank 0: batches done of the total. */
    @FunctionalInterface
    public interface Progress {
        void update(long done, long total);
    }

    private Evaluation() {}

    /**
     * {@code pretrain-gpt}'s evaluation: {@code o}'s data flags ({@code --data-path --split --seq-length
     * --seed --data-cache-path}, or {@code --mock-data}), {@code --eval-iters} global batches of
     * {@code --global-batch-size} in micro-batches of {@code --micro-batch-size}; {@code --train-iters} and
     * {@code --eval-interval} size the splits as they did in training.
     */
    public static Result onMegatronData(Path checkpoint, Path modelConfig, int tp, int dp, PretrainOptions o,
            Progress progress) {
        int gbs = o.globalBatchSize != null ? o.globalBatchSize : o.microBatchSize * dp;
        if (gbs % (o.microBatchSize * dp) != 0) {
            throw new IllegalArgumentException("--global-batch-size " + gbs + " is not a multiple of --micro-batch-size "
                    + o.microBatchSize + " x data-parallel size " + dp);
        }
        return withModel(checkpoint, modelConfig, tp, dp, cfg -> {
            if (o.dataPath == null && !o.mockData) {
                throw new IllegalArgumentException("no data: give --data-path PREFIX, --mock-data or --jsonl FILE");
            }
            if (o.dataPath != null) {
                IndexedData data = new IndexedData(o, gbs);
                return new Source((rank, size) -> passes(o.evalIters, i -> data.validBatches(i, rank, size,
                        o.microBatchSize, gbs)), data::close, o.seqLength);
            }
            MockData data = new MockData(o.seqLength, cfg.vocabSize(), o.seed);
            long heldOut = 1L << 40; // as pretrain-gpt's evaluation: iterations never trained on
            return new Source((rank, size) -> passes(o.evalIters, i -> data.microBatches(heldOut + i, rank, size,
                    o.microBatchSize, gbs)), () -> { }, o.seqLength);
        }, true, progress);
    }

    /** Mean token loss over a JSONL file's documents ({@code key} holds the text). */
    public static Result onJsonl(Path checkpoint, Path modelConfig, int tp, int dp, Path jsonl, String key,
            TextTokenizer tokenizer, int seq, int microBatchSize, Progress progress) {
        List<long[]> windows = windows(readTokens(jsonl, key, tokenizer), seq);
        if (windows.isEmpty()) {
            throw new IllegalArgumentException(jsonl + ": fewer than 2 tokens in all documents; nothing to evaluate");
        }
        return withModel(checkpoint, modelConfig, tp, dp, cfg -> new Source((rank, size) -> {
            List<List<MicroBatch>> passes = new ArrayList<>();
            List<long[]> mine = new ArrayList<>();
            for (int i = rank; i < windows.size(); i += size) {
                mine.add(windows.get(i));
            }
            for (int at = 0; at < mine.size(); at += microBatchSize) {
                passes.add(List.of(padded(mine.subList(at, Math.min(mine.size(), at + microBatchSize)), seq)));
            }
            return passes;
        }, () -> { }, seq), false, progress);
    }

    private record Source(Batches batches, Runnable close, int seq) {}

    private interface SourceFactory {
        Source make(TransformerConfig cfg);
    }

    private static List<List<MicroBatch>> passes(int n, java.util.function.IntFunction<List<MicroBatch>> pass) {
        List<List<MicroBatch>> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            out.add(pass.apply(i));
        }
        return out;
    }

    /**
     * Loads the checkpoint on {@code tp x dp} ranks and averages the loss.
     *
     * @param perMicroBatch true: mean of micro-batch means (pretrain-gpt); false: mean over tokens
     */
    private static Result withModel(Path checkpoint, Path modelConfig, int tp, int dp, SourceFactory sources,
            boolean perMicroBatch, Progress progress) {
        if (tp < 1 || dp < 1) {
            throw new IllegalArgumentException("--tp and --dp must be >= 1, found " + tp + " and " + dp);
        }
        CheckpointFormat format = CheckpointFormat.detect(checkpoint);
        HfCheckpoint hf = format == CheckpointFormat.HF ? HfCheckpoint.open(checkpoint) : null;
        try (WeightSource weights = hf == null ? format.open(checkpoint, modelConfig) : null) {
            TransformerConfig cfg = hf != null ? hf.config() : weights.config();
            RankGrid grid = RankGrid.create(tp * dp, tp, 1, 1, 1);
            grid.validateModel(cfg.numAttentionHeads(), cfg.numQueryGroups(), cfg.vocabSize(), cfg.numExperts());
            Source source = sources.make(cfg);
            if (cfg.positionEmbedding() == TransformerConfig.PositionEmbedding.LEARNED_ABSOLUTE
                    && source.seq() > cfg.maxPositionEmbeddings()) {
                throw new IllegalArgumentException("--seq-length " + source.seq() + " exceeds the model's "
                        + "max_position_embeddings " + cfg.maxPositionEmbeddings());
            }
            try {
                List<double[]> out = LocalWorld.run(grid, ctx -> {
                    JniUtils.setGradMode(false);
                    GPTModel model = new GPTModel(ctx, cfg, false);
                    if (hf != null) {
                        hf.loadInto(model);
                    } else {
                        CheckpointLoader.loadInto(weights, model);
                    }
                    return rankLoss(ctx, model, source, perMicroBatch, ctx.rank() == 0 ? progress : (n, t) -> { });
                });
                double loss = out.get(0)[0];
                return new Result(loss, Math.exp(Math.min(loss, 700)), (long) out.get(0)[1]);
            } finally {
                source.close().run();
            }
        } finally {
            if (hf != null) {
                hf.close();
            }
        }
    }

    /** {loss averaged over DP ranks, tokens over all ranks}. */
    private static double[] rankLoss(RankContext ctx, GPTModel model, Source source, boolean perMicroBatch,
            Progress progress) {
        ProcessGroup dp = ctx.group(GroupKind.DATA_CONTEXT);
        double sum = 0;
        double weight = 0;
        long tokens = 0;
        long done = 0;
        try (NDManager s = ctx.manager().newSubManager()) {
            List<List<MicroBatch>> passes = source.batches().of(dp.rank(), dp.size());
            progress.update(0, passes.size());
            for (List<MicroBatch> pass : passes) {
                for (MicroBatch mb : pass) {
                    try (NDManager step = s.newSubManager()) {
                        NDArray x = step.create(mb.inputs(), new Shape(mb.rows(), mb.seq()));
                        NDArray y = step.create(mb.labels(), new Shape(mb.rows(), mb.seq()));
                        double loss = model.loss(x, y).getFloat();
                        long counted = java.util.Arrays.stream(mb.labels()).filter(l -> l >= 0).count();
                        sum += perMicroBatch ? loss : loss * counted;
                        weight += perMicroBatch ? 1 : counted;
                        tokens += counted;
                    }
                }
                progress.update(++done, passes.size());
            }
            NDArray t = s.create(new double[] {sum, weight, tokens});
            if (dp.size() > 1) {
                t = dp.allReduce(t, ReduceOp.SUM);
            }
            double[] v = t.toDoubleArray();
            if (!perMicroBatch) { // token-weighted over all ranks
                return new double[] {v[0] / v[1], v[2]};
            }
            // pretrain-gpt's arithmetic to the bit: each rank's mean as float32, averaged over DP in float32
            NDArray mean = s.create(new float[] {(float) (sum / weight)});
            float loss = dp.size() > 1 ? dp.allReduce(mean, ReduceOp.AVG).getFloat(0) : mean.getFloat(0);
            return new double[] {loss, v[2]};
        }
    }

    /** Every document's ids followed by the end-of-document id, concatenated. */
    static long[] readTokens(Path jsonl, String key, TextTokenizer tokenizer) {
        if (!Files.isRegularFile(jsonl)) {
            throw new IllegalArgumentException("--jsonl " + jsonl + ": no such file");
        }
        Integer eod;
        try {
            eod = tokenizer.eod();
        } catch (InvalidDataException e) {
            eod = null;
        }
        List<int[]> docs = new ArrayList<>();
        long total = 0;
        try (BufferedReader r = Files.newBufferedReader(jsonl, StandardCharsets.UTF_8)) {
            String line;
            int n = 0;
            while ((line = r.readLine()) != null) {
                n++;
                if (line.isBlank()) {
                    continue;
                }
                JsonElement text;
                try {
                    JsonElement e = JsonParser.parseString(line);
                    text = e.isJsonObject() ? e.getAsJsonObject().get(key) : null;
                } catch (JsonParseException e) {
                    throw new IllegalArgumentException(jsonl + " line " + n + ": not JSON (" + e.getMessage() + ")");
                }
                if (text == null || !text.isJsonPrimitive() || !text.getAsJsonPrimitive().isString()) {
                    throw new IllegalArgumentException(jsonl + " line " + n + ": no string field \"" + key + "\"");
                }
                int[] ids = tokenizer.encode(text.getAsString());
                docs.add(ids);
                total += ids.length + (eod != null ? 1 : 0);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + jsonl, e);
        }
        long[] out = new long[Math.toIntExact(total)];
        int at = 0;
        for (int[] d : docs) {
            for (int id : d) {
                out[at++] = id;
            }
            if (eod != null) {
                out[at++] = eod;
            }
        }
        return out;
    }

    /** Windows of {@code seq + 1} tokens, consecutive ones sharing a token; the last may be shorter (>= 2). */
    static List<long[]> windows(long[] tokens, int seq) {
        List<long[]> out = new ArrayList<>();
        for (int start = 0; start + 1 < tokens.length; start += seq) {
            out.add(java.util.Arrays.copyOfRange(tokens, start, Math.min(tokens.length, start + seq + 1)));
        }
        return out;
    }

    /** A micro-batch of windows; positions past a short window are padded and ignored by the loss (-1). */
    private static MicroBatch padded(List<long[]> rows, int seq) {
        long[] x = new long[rows.size() * seq];
        long[] y = new long[rows.size() * seq];
        java.util.Arrays.fill(y, -1);
        for (int r = 0; r < rows.size(); r++) {
            long[] w = rows.get(r);
            System.arraycopy(w, 0, x, r * seq, w.length - 1);
            System.arraycopy(w, 1, y, r * seq, w.length - 1);
        }
        return new MicroBatch(x, y, rows.size(), seq);
    }
}
