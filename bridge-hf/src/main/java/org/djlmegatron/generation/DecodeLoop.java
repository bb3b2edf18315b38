package org.djlmegatron.generation;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.transformer.KvCache;

/**
 * The generation loop of one rank, for a batch of prompts of any lengths, as Megatron's static
 * engine runs it: all rows share positions; the first forward covers the shortest prompt, then one
 * column at a time, where a row still inside its prompt takes its prompt token (its logits give
 * the prompt's log-probabilities) and the others choose one. No padding is ever attended, so each
 * row's result is the one it would get alone. With the KV cache each step feeds one column;
 * without it (the benchmark's baseline) each step recomputes the whole prefix.
 */
final class DecodeLoop {

    private final RankContext ctx;
    private final GPTModel model;
    private final int vocab;

    DecodeLoop(RankContext ctx, GPTModel model) {
        this.ctx = ctx;
        this.model = model;
        this.vocab = model.config().vocabSize();
    }

    /**
     * Generates for every prompt (validated by the caller against the context).
     *
     * @param eosId the end-of-sequence id, or null for none
     * @param context the longest sequence (prompt and new tokens)
     * @param listener told of new tokens on rank 0 only
     */
    List<Generated> run(List<Prompt> prompts, Long eosId, int context, boolean useCache, boolean logprobs,
            TokenListener listener) {
        int b = prompts.size();
        int[] len = new int[b];
        int[] limit = new int[b];
        int minLen = Integer.MAX_VALUE;
        int total = 0;
        for (int i = 0; i < b; i++) {
            Prompt p = prompts.get(i);
            len[i] = p.ids().length;
            limit[i] = (int) Math.min((long) len[i] + p.maxNewTokens(), context);
            minLen = Math.min(minLen, len[i]);
            total = Math.max(total, limit[i]);
        }
        long[][] tokens = new long[b][total];
        Row[] rows = new Row[b];
        for (int i = 0; i < b; i++) {
            System.arraycopy(prompts.get(i).ids(), 0, tokens[i], 0, len[i]);
            rows[i] = new Row(prompts.get(i), len[i] >= limit[i], logprobs);
        }
        Guarded tell = new Guarded(ctx.rank() == 0 ? listener : TokenListener.NONE);
        for (int i = 0; i < b; i++) {
            if (rows[i].finished) {
                tell.onFinish(i);
            }
        }
        try (NDManager m = ctx.manager().newSubManager();
                KvCache cache = useCache ? new KvCache(m, model.config(), ctx.tensorGroup().size(), b, total) : null) {
            float[] logits = forward(m, cache, tokens, 0, minLen, logprobs);
            if (logprobs) { // the prompt columns of the first forward, all rows in their prompts
                for (int i = 0; i < b; i++) {
                    for (int c = 1; c < minLen; c++) {
                        rows[i].logprobs.add(Sampler.logProb(logits, i * minLen + c - 1, vocab, tokens[i][c]));
                    }
                }
                logits = lastColumns(logits, b, minLen);
            }
            for (int c = minLen; c < total; c++) {
                boolean pending = false;
                for (int i = 0; i < b; i++) {
                    Row r = rows[i];
                    if (c < len[i]) {
                        tokens[i][c] = prompts.get(i).ids()[c];
                        pending = true;
                    } else if (!r.finished) {
                        long id = Sampler.choose(logits, i, vocab, r.prompt.sampling(), r.rng);
                        tokens[i][c] = id;
                        r.ids.add(id);
                        tell.onToken(i, id);
                        r.finish(eosId != null && id == eosId, c + 1 >= limit[i]);
                        if (r.finished) {
                            tell.onFinish(i);
                        }
                    } else {
                        tokens[i][c] = eosId != null ? eosId : 0; // never read by a live row
                    }
                    if (logprobs && c < len[i] + r.ids.size()) {
                        r.logprobs.add(Sampler.logProb(logits, i, vocab, tokens[i][c]));
                    }
                    pending |= !r.finished;
                }
                if (!pending || c + 1 == total) {
                    break;
                }
                logits = forward(m, cache, tokens, c, c + 1, false);
            }
        }
        if (tell.failure != null) {
            throw tell.failure;
        }
        List<Generated> out = new ArrayList<>(b);
        for (int i = 0; i < b; i++) {
            out.add(rows[i].result());
        }
        return out;
    }

    /**
     * A listener whose failure is kept until the loop ends: rank 0 must not leave the loop early,
     * or the other ranks' collectives would pair with the next job's.
     */
    private static final class Guarded implements TokenListener {
        private final TokenListener inner;
        RuntimeException failure;

        Guarded(TokenListener inner) {
            this.inner = inner;
        }

        @Override
        public void onToken(int row, long id) {
            if (failure == null) {
                try {
                    inner.onToken(row, id);
                } catch (RuntimeException e) {
                    failure = e;
                }
            }
        }

        @Override
        public void onFinish(int row) {
            if (failure == null) {
                try {
                    inner.onFinish(row);
                } catch (RuntimeException e) {
                    failure = e;
                }
            }
        }
    }

    /**
     * Full-vocabulary fp32 logits of columns {@code from .. to-1} fed through the cache (every
     * column when {@code all}, else the last), or, without a cache, of the whole prefix
     * {@code 0 .. to-1} recomputed.
     */
    private float[] forward(NDManager m, KvCache cache, long[][] tokens, int from, int to, boolean all) {
        int first = cache != null ? from : 0;
        try (NDManager step = m.newSubManager()) {
            long[] ids = new long[tokens.length * (to - first)];
            for (int i = 0; i < tokens.length; i++) {
                System.arraycopy(tokens[i], first, ids, i * (to - first), to - first);
            }
            NDArray x = step.create(ids, new Shape(tokens.length, to - first));
            NDArray local = cache != null ? model.forwardCached(x, cache) : model.apply(x);
            if (!all) {
                local = local.get(new NDIndex(":, {}:", to - first - 1));
            }
            return model.gatherLogits(local).toType(DataType.FLOAT32, false).toFloatArray();
        }
    }

    /** The last column of {@code [b, s, vocab]} logits. */
    private float[] lastColumns(float[] logits, int b, int s) {
        float[] last = new float[b * vocab];
        for (int i = 0; i < b; i++) {
            System.arraycopy(logits, (i * s + s - 1) * vocab, last, i * vocab, vocab);
        }
        return last;
    }

    /** One row's progress. */
    private static final class Row {
        final Prompt prompt;
        final SplittableRandom rng;
        final List<Long> ids = new ArrayList<>();
        final List<Double> logprobs;
        boolean finished;
        String reason = "length";

        Row(Prompt prompt, boolean finished, boolean logprobs) {
            this.prompt = prompt;
            this.rng = new SplittableRandom(prompt.seed());
            this.finished = finished;
            this.logprobs = logprobs ? new ArrayList<>() : null;
        }

        void finish(boolean eos, boolean full) {
            if (eos) {
                finished = true;
                reason = "stop";
            } else if (full) {
                finished = true;
            }
        }

        Generated result() {
            double[] lp = logprobs == null ? null : logprobs.stream().mapToDouble(Double::doubleValue).toArray();
            return new Generated(prompt.ids(), ids.stream().mapToLong(Long::longValue).toArray(), lp, reason);
        }
    }
}
