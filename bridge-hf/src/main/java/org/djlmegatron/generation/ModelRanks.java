package org.djlmegatron.generation;

import ai.djl.pytorch.jni.JniUtils;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.Consumer;
import org.djlmegatron.bridge.CheckpointFormat;
import org.djlmegatron.bridge.convert.CheckpointLoader;
import org.djlmegatron.bridge.convert.WeightSource;
import org.djlmegatron.bridge.hf.HfCheckpoint;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * A model loaded once on {@code tp} thread ranks that stay up and run work on request: every
 * rank runs each piece of work in the order submitted (the collectives inside pair up), and the
 * caller gets rank 0's result. Used by generation, evaluation and the server, where loading the
 * checkpoint for each request would dominate.
 */
public final class ModelRanks implements AutoCloseable {

    /** Work for every rank: the same code runs on each, with its own shard of the model. */
    @FunctionalInterface
    public interface RankWork<T> {
        T run(RankContext ctx, GPTModel model);
    }

    private record Job(RankWork<?> work, CompletableFuture<Object> result) {}

    private static final Job STOP = new Job(null, null);

    private final TransformerConfig cfg;
    private final int tp;
    private final List<BlockingQueue<Job>> queues = new ArrayList<>();
    private final Thread world;
    private volatile Throwable failure;

    private ModelRanks(TransformerConfig cfg, int tp, Consumer<GPTModel> load, Duration loadTimeout) {
        this.cfg = cfg;
        this.tp = tp;
        RankGrid grid = RankGrid.create(tp, tp, 1, 1, 1);
        grid.validateModel(cfg.numAttentionHeads(), cfg.numQueryGroups(), cfg.vocabSize(), cfg.numExperts());
        for (int r = 0; r < tp; r++) {
            queues.add(new LinkedBlockingQueue<>());
        }
        CountDownLatch loaded = new CountDownLatch(tp);
        world = new Thread(() -> {
            try {
                LocalWorld.run(grid, ctx -> serve(ctx, load, loaded));
            } catch (Throwable t) {
                failure = t;
                failPending(t);
            } finally {
                while (loaded.getCount() > 0) {
                    loaded.countDown();
                }
            }
        }, "model-ranks");
        world.setDaemon(true);
        world.start();
        try {
            if (!loaded.await(loadTimeout.toMillis(), TimeUnit.MILLISECONDS)) {
                close();
                throw new IllegalStateException("loading the model on " + tp + " ranks took over " + loadTimeout);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while loading the model", e);
        }
        if (failure != null) {
            close();
            throw failure instanceof RuntimeException re ? re : new IllegalStateException(failure);
        }
    }

    /**
     * Loads a checkpoint of any format ({@link CheckpointFormat#detect}) at tensor-parallel size
     * {@code tp}, without sequence parallelism.
     *
     * @param modelConfig Megatron arguments as JSON for Megatron checkpoints without {@code args}
     *     (may be null)
     */
    public static ModelRanks load(Path checkpoint, Path modelConfig, int tp) {
        CheckpointFormat format = CheckpointFormat.detect(checkpoint);
        Duration timeout = Duration.ofMinutes(30);
        if (format == CheckpointFormat.HF) {
            try (HfCheckpoint ckpt = HfCheckpoint.open(checkpoint)) { // each rank reads its own shards
                return new ModelRanks(ckpt.config(), tp, ckpt::loadInto, timeout);
            }
        }
        try (WeightSource source = format.open(checkpoint, modelConfig)) {
            return new ModelRanks(source.config(), tp, model -> CheckpointLoader.loadInto(source, model), timeout);
        }
    }

    /** Ranks holding a model filled by {@code load} (called on every rank), e.g. random weights. */
    public static ModelRanks of(TransformerConfig cfg, int tp, Consumer<GPTModel> load) {
        return new ModelRanks(cfg, tp, load, Duration.ofMinutes(30));
    }

    public TransformerConfig config() {
        return cfg;
    }

    public int tensorParallelSize() {
        return tp;
    }

    /**
     * Runs {@code work} on every rank after the work submitted before, and returns rank 0's result.
     *
     * @throws IllegalStateException if the ranks have stopped, or the work took over {@code timeout}
     */
    @SuppressWarnings("unchecked")
    public <T> T run(RankWork<T> work, Duration timeout) {
        if (failure != null || !world.isAlive()) {
            throw new IllegalStateException("the model ranks have stopped"
                    + (failure != null ? ": " + failure.getMessage() : ""));
        }
        CompletableFuture<Object> result = new CompletableFuture<>();
        Job job = new Job(work, result);
        queues.forEach(q -> q.add(job));
        try {
            return (T) result.get(timeout.toMillis(), TimeUnit.MILLISECONDS);
        } catch (ExecutionException e) {
            Throwable c = e.getCause();
            throw c instanceof RuntimeException re ? re : new IllegalStateException(c);
        } catch (TimeoutException e) {
            throw new IllegalStateException("the model ranks did not answer within " + timeout);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while waiting for the model ranks", e);
        }
    }

    /** A rank: builds and loads its shard, then runs jobs until {@link #close}. */
    private Void serve(RankContext ctx, Consumer<GPTModel> load, CountDownLatch loaded) {
        JniUtils.setGradMode(false);
        GPTModel model;
        try {
            model = new GPTModel(ctx, cfg, false);
            load.accept(model);
        } catch (RuntimeException e) {
            failure = e; // release the caller now, not when the other ranks time out
            while (loaded.getCount() > 0) {
                loaded.countDown();
            }
            throw e;
        }
        loaded.countDown();
        BlockingQueue<Job> queue = queues.get(ctx.rank());
        while (true) {
            Job job;
            try {
                job = queue.take();
            } catch (InterruptedException e) {
                return null;
            }
            if (job == STOP) {
                return null;
            }
            try {
                Object value = job.work().run(ctx, model);
                if (ctx.rank() == 0) {
                    job.result().complete(value);
                }
            } catch (RuntimeException e) {
                // every rank meets the same bad input at the same point; the first failure answers
                job.result().completeExceptionally(e);
            }
        }
    }

    private void failPending(Throwable t) {
        for (BlockingQueue<Job> q : queues) {
            for (Job j : q) {
                if (j.result() != null) {
                    j.result().completeExceptionally(t);
                }
            }
        }
    }

    /** Stops the ranks (after the work already submitted), waiting up to a minute. */
    @Override
    public void close() {
        queues.forEach(q -> q.add(STOP));
        try {
            world.join(Duration.ofMinutes(1).toMillis());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
