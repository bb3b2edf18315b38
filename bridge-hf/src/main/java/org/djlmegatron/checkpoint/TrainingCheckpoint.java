package org.djlmegatron.checkpoint;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import com.google.gson.GsonBuilder;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.djlmegatron.bridge.convert.CheckpointException;
import org.djlmegatron.bridge.convert.ParallelLayout;
import org.djlmegatron.bridge.convert.RankFile;
import org.djlmegatron.bridge.convert.ReadChecks;
import org.djlmegatron.bridge.djl.DjlMetadata;
import org.djlmegatron.bridge.djl.FileChecksums;
import org.djlmegatron.bridge.megatron.IterationTracker;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.io.SafetensorsReader;
import org.djlmegatron.io.SafetensorsWriter;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.pipeline.PipelineLayout;
import org.djlmegatron.training.DistributedStep;
import org.djlmegatron.training.model.TrainableParameter;

/**
 * Training checkpoints in the djl-megatron format: per tensor rank {@code mp_rank_TT/} (per tensor
 * and expert rank {@code mp_rank_TT_EEE/} under expert parallelism, Megatron's legacy names: each
 * holds the dense weights and that expert rank's experts) the model
 * shards ({@code model.safetensors}, written by DP rank 0) and the optimizer's fp32 masters and
 * moments ({@code optim_dp_RRR.safetensors}, one per DP shard under the distributed optimizer),
 * plus {@code trainer_state.json} (counters, loss scale, data position, arguments) and
 * {@code metadata.json}, which records a CRC32C of every other file ({@link FileChecksums}, verified
 * on resume unless {@code --no-verify}). Everything is written into a hidden staging directory, which is renamed
 * to {@code iter_XXXXXXX} once complete; {@code latest_checkpointed_iteration.txt} is replaced
 * last, atomically. A process killed mid-save leaves the previous checkpoint current.
 * Every rank of the world calls {@link #save} and {@link #restore} together.
 */
public final class TrainingCheckpoint {

    public static final String TRAINER_FILE = "trainer_state.json";
    static final String OPTIMIZER = "optimizer";
    private static final String STAGING_PREFIX = ".staging_";

    private TrainingCheckpoint() {}

    public static String optimizerFile(int dpRank) {
        return String.format("optim_dp_%03d.safetensors", dpRank);
    }

    /** What the trainer records besides tensors. */
    public record TrainerState(long iteration, long updates, long consumedSamples, int globalBatchSize, int dpSize,
            boolean distributedOptimizer, long flatSize, double[] lossScaler, long seed, String args) {}

    /** Saves iteration {@code state.iteration()} under {@code root} (one model chunk, an even split). Collective. */
    public static void save(Path root, RankContext ctx, GPTModel model, DistributedStep trainer, TrainerState state) {
        save(root, ctx, List.of(model), null, trainer, state);
    }

    /**
     * Saves iteration {@code state.iteration()} under {@code root}: this rank's model chunks (all
     * in its {@code mp_rank_*} directory under global names; {@code stages}, null for the even
     * split, is recorded in {@code metadata.json}), its optimizer state with its
     * {@link OptimizerLayout}, and the routers' expert biases. Collective.
     */
    public static void save(Path root, RankContext ctx, List<GPTModel> chunks, PipelineLayout stages,
            DistributedStep trainer, TrainerState state) {
        ProcessGroup tp = ctx.tensorGroup();
        ProcessGroup dp = ctx.group(GroupKind.DATA_CONTEXT);
        ProcessGroup pp = ctx.group(GroupKind.PIPELINE);
        Path staging = root.resolve(STAGING_PREFIX + IterationTracker.dirName(state.iteration()));
        if (ctx.rank() == 0) {
            prepareStaging(root, staging);
        }
        worldBarrier(tp, dp, pp);
        ParallelLayout layout = layoutOf(ctx, stages);
        Path rankDir = staging.resolve(rankDirName(ctx));
        createDirectories(rankDir);
        boolean firstReplica = firstReplicaOfExperts(ctx);
        trainer.gatherWeights(); // ZeRO-3: whole weights for the model file (collective; the next step frees them)
        if (firstReplica) {
            Map<String, NDArray> weights = new LinkedHashMap<>();
            for (GPTModel model : chunks) {
                for (ShardedParameter p : model.parameters()) {
                    if (!model.isFirstStage() && p.name().startsWith("embedding.")) {
                        continue; // the last stage's tied copy: the first stage's file holds the embedding
                    }
                    weights.put(p.name(), p.parameter().getArray().stopGradient());
                }
            }
            SafetensorsWriter.write(rankDir.resolve(DjlMetadata.MODEL_FILE), weights, Map.of("format", "pt"));
            RouterBiases.write(rankDir, chunks);
        }
        if (state.distributedOptimizer() || firstReplica) {
            try (NDManager order = ctx.manager().newSubManager()) { // ZeRO-3: in the distributed optimizer's order
                Map<String, NDArray> optim = new LinkedHashMap<>();
                optim.put("masters", trainer.checkpointMasters(order));
                trainer.checkpointOptimizerState(order).forEach(optim::put);
                SafetensorsWriter.write(rankDir.resolve(optimizerFile(state.distributedOptimizer() ? dp.rank() : 0)), optim,
                        optimizerLayout(ctx, chunks, trainer, state.distributedOptimizer()).toMetadata());
            }
        }
        trainer.releaseWeights();
        pauseForTests(state.iteration());
        worldBarrier(tp, dp, pp);
        if (ctx.rank() == 0) {
            Map<String, String> contents = new LinkedHashMap<>();
            contents.put(DjlMetadata.MODEL, DjlMetadata.MODEL_FILE);
            contents.put(OPTIMIZER, "optim_dp_RRR.safetensors");
            if (RouterBiases.any(chunks)) {
                contents.put(RouterBiases.CONTENT, RouterBiases.FILE);
            }
            writeString(staging.resolve(TRAINER_FILE),
                    new GsonBuilder().setPrettyPrinting().create().toJson(state));
            new DjlMetadata(state.iteration(), layout, chunks.get(0).config(), contents)
                    .withChecksums(FileChecksums.of(staging, filesUnder(staging))).write(staging);
            publish(root, staging, state.iteration());
        }
        worldBarrier(tp, dp, pp);
    }

    /**
     * This rank's flat optimizer vectors as the trainer lays them out; checked against the
     * trainer's own length, so a sharding the record cannot describe fails here, not at a resume.
     */
    private static OptimizerLayout optimizerLayout(RankContext ctx, List<GPTModel> chunks, DistributedStep trainer,
            boolean distributedOptimizer) {
        List<TrainableParameter> params = new ArrayList<>();
        chunks.forEach(c -> params.addAll(c.trainableParameters()));
        ProcessGroup dp = ctx.group(GroupKind.DATA_CONTEXT);
        ProcessGroup edp = ctx.group(GroupKind.EXPERT_DATA);
        OptimizerLayout layout = OptimizerLayout.of(params, ctx.group(GroupKind.EXPERT).size() > 1,
                distributedOptimizer, dp.size(), dp.rank(), edp.size(), edp.rank());
        long held = trainer.checkpointLength();
        if (layout.fileLength() != held) {
            throw new IllegalStateException("the trainer holds " + held + " optimizer elements on rank " + ctx.rank()
                    + ", the checkpoint layout expects " + layout.fileLength() + " (an optimizer sharding "
                    + "OptimizerLayout does not describe)");
        }
        return layout;
    }

    /** The run's tensor, pipeline and expert parallel sizes, with its pipeline split ({@code stages}, null: even). */
    private static ParallelLayout layoutOf(RankContext ctx, PipelineLayout stages) {
        ParallelLayout sizes = new ParallelLayout(ctx.tensorGroup().size(), ctx.group(GroupKind.PIPELINE).size(),
                ctx.group(GroupKind.EXPERT).size());
        return stages == null ? sizes : sizes.withStages(stages);
    }

    /** This rank's directory, Megatron's {@code mp_rank_TT[_PPP][_EEE]}. */
    private static String rankDirName(RankContext ctx) {
        return new RankFile(ctx.tensorGroup().rank(), ctx.group(GroupKind.PIPELINE).rank(),
                ctx.group(GroupKind.EXPERT).rank()).dirName(layoutOf(ctx, null));
    }

    /**
     * Whether this rank writes its directory's model file (and, without the distributed optimizer,
     * its optimizer file): the first data-parallel replica, or under expert parallelism the first
     * replica of this rank's experts (the dense weights are equal on all of them).
     */
    private static boolean firstReplicaOfExperts(RankContext ctx) {
        return ctx.group(GroupKind.EXPERT).size() > 1 ? ctx.group(GroupKind.EXPERT_DATA).rank() == 0
                : ctx.group(GroupKind.DATA_CONTEXT).rank() == 0;
    }

    /** Whether {@code root} holds any complete training checkpoint (not just converted weights). */
    public static boolean hasTrainingState(Path root) {
        try {
            latest(root);
            return true;
        } catch (CheckpointException e) {
            return false;
        }
    }

    /** The newest complete iteration directory under {@code root}. */
    public static Path latest(Path root) {
        try {
            Path dir = IterationTracker.iterationDir(root);
            if (Files.isRegularFile(dir.resolve(TRAINER_FILE))) {
                return dir;
            }
        } catch (CheckpointException e) {
            // fall through: look for complete iteration directories
        }
        try (Stream<Path> dirs = Files.list(root)) {
            return dirs.filter(d -> d.getFileName().toString().startsWith("iter_"))
                    .filter(d -> Files.isRegularFile(d.resolve(TRAINER_FILE)))
                    .max(Comparator.comparingLong(IterationTracker::iterationOf))
                    .orElseThrow(() -> new CheckpointException(root + ": no complete checkpoint (no "
                            + IterationTracker.TRACKER + " naming an iteration with " + TRAINER_FILE + ")"));
        } catch (IOException e) {
            throw new CheckpointException(root + ": cannot list: " + e, e);
        }
    }

    public static TrainerState readState(Path iterDir, ReadChecks checks) {
        Path f = iterDir.resolve(TRAINER_FILE);
        if (checks.verifyChecksums()) {
            FileChecksums.verify(iterDir, TRAINER_FILE, DjlMetadata.read(iterDir).checksums());
        }
        try {
            return new GsonBuilder().create().fromJson(Files.readString(f), TrainerState.class);
        } catch (IOException | RuntimeException e) {
            throw new CheckpointException(f + ": cannot read trainer state: " + e, e);
        }
    }

    /**
     * Refuses, before any rank starts, a resume whose data position would shift: the global batch
     * size fixes which samples each iteration reads. Any TP, DP or optimizer sharding is fine.
     */
    public static void checkResumable(Path iterDir, TrainerState state, int globalBatchSize) {
        if (state.globalBatchSize() != globalBatchSize) {
            throw new CheckpointException(iterDir.resolve(TRAINER_FILE) + ": saved with global batch size "
                    + state.globalBatchSize() + ", resumed with " + globalBatchSize + " (the data position would "
                    + "shift); use the same, or --finetune to start a new run from these weights");
        }
    }

    /**
     * Refuses, before any rank starts, restoring optimizer state that cannot be laid out for this
     * run: a layout version this build does not read, or a version-1 checkpoint (written before
     * files recorded their layout) saved with pipelining or expert parallelism at another layout,
     * or one saved without them at PP > 1. Version 2 reshards to any TP, PP, EP and DP layout.
     */
    public static void checkPipelineResumable(Path iterDir, TrainerState state, int tp, int pp, int dp,
            boolean distributedOptimizer) {
        ParallelLayout saved = DjlMetadata.read(iterDir).layout();
        if (optimizerLayoutVersion(iterDir, saved) >= 2) {
            return;
        }
        boolean same = saved.tp() == tp && saved.pp() == pp && state.dpSize() == dp
                && state.distributedOptimizer() == distributedOptimizer;
        if ((saved.pp() > 1 || pp > 1) && !same) {
            throw new CheckpointException(iterDir + ": saved at TP " + saved.tp() + " x PP " + saved.pp() + " x DP "
                    + state.dpSize() + (state.distributedOptimizer() ? " with the distributed optimizer" : "")
                    + ", resumed at TP " + tp + " x PP " + pp + " x DP " + dp
                    + (distributedOptimizer ? " with the distributed optimizer" : "")
                    + ": its optimizer files (layout version 1, written before they recorded their layout) cannot be "
                    + "resharded across pipeline layouts; resume with the same layout, or give --no-load-optim (or "
                    + "--finetune) to load only the weights");
        }
    }

    /** The optimizer layout version of a checkpoint (its first rank's first file; refused when unreadable). */
    static int optimizerLayoutVersion(Path iterDir, ParallelLayout saved) {
        Path f = iterDir.resolve(new RankFile(0, 0, 0).dirName(saved)).resolve(optimizerFile(0));
        if (!Files.isRegularFile(f)) {
            throw new CheckpointException(f + ": missing (every checkpoint has the first rank's optimizer file)");
        }
        try (SafetensorsReader r = SafetensorsReader.open(f)) {
            return OptimizerLayout.version(r.metadata(), f);
        }
    }

    /** The tensor-parallel size a checkpoint was saved at. */
    public static int savedTensorParallel(Path iterDir) {
        return DjlMetadata.read(iterDir).layout().tp();
    }

    /** Restores this rank's state of one model chunk at an even split; see {@link #restore(Path, RankContext, List, PipelineLayout, DistributedStep, TrainerState, boolean, ReadChecks)}. */
    public static void restore(Path iterDir, RankContext ctx, GPTModel model, DistributedStep trainer, TrainerState state,
            boolean distributedOptimizer, ReadChecks checks) {
        restore(iterDir, ctx, List.of(model), null, trainer, state, distributedOptimizer, checks);
    }

    /**
     * Restores this rank's optimizer state (masters and moments), counters and loss scale. The
     * same layout reads this rank's own file; another TP, PP (or pipeline split), EP or DP size,
     * or optimizer sharding goes through {@link OptimizerReshard}.
     */
    public static void restore(Path iterDir, RankContext ctx, List<GPTModel> chunks, PipelineLayout stages,
            DistributedStep trainer, TrainerState state, boolean distributedOptimizer, ReadChecks checks) {
        ProcessGroup dp = ctx.group(GroupKind.DATA_CONTEXT);
        ParallelLayout saved = DjlMetadata.read(iterDir).layout();
        boolean sameLayout = saved.equals(layoutOf(ctx, stages)) && state.dpSize() == dp.size()
                && state.distributedOptimizer() == distributedOptimizer;
        int version = optimizerLayoutVersion(iterDir, saved);
        if (version < 2) {
            checkPipelineResumable(iterDir, state, ctx.tensorGroup().size(), ctx.group(GroupKind.PIPELINE).size(),
                    dp.size(), distributedOptimizer);
            checkExpertLayout(iterDir, ctx.group(GroupKind.EXPERT).size(), sameLayout);
        }
        Map<String, NDArray> optState = sameLayout ? readOwn(iterDir, ctx, trainer, state, checks)
                : reshard(iterDir, saved, ctx, chunks, trainer, state, distributedOptimizer, checks);
        NDArray masters = optState.remove("masters");
        trainer.restoreOptimizer(masters, optState);
        trainer.scaler().loadState(state.lossScaler());
        trainer.restoreCounters(state.iteration(), state.updates());
        trainer.writeBackMasters();
    }

    /**
     * Sets the routers' expert biases ({@code --moe-router-enable-expert-bias}) from the
     * checkpoint; they are model state, so this goes with the weights (also under
     * {@code --no-load-optim} and {@code --finetune}, as Megatron loads them with the model).
     */
    public static void restoreRouterBiases(Path iterDir, List<GPTModel> chunks, ReadChecks checks) {
        RouterBiases.restore(iterDir, DjlMetadata.read(iterDir), chunks, checks);
    }

    /**
     * A version-1 checkpoint's optimizer state is resharded (another TP or DP size, or optimizer
     * sharding) only without expert parallelism on either side: its files do not record the
     * expert region. The weights alone reshard at any expert-parallel size ({@code --finetune},
     * {@code --no-load-optim}).
     */
    private static void checkExpertLayout(Path iterDir, int ep, boolean sameLayout) {
        int savedEp = DjlMetadata.read(iterDir).layout().ep();
        if (savedEp != ep || ep > 1 && !sameLayout) {
            throw new CheckpointException(iterDir + ": saved at --expert-model-parallel-size " + savedEp + ", resumed at "
                    + ep + (savedEp == ep ? " with another TP size, DP size or optimizer sharding" : "")
                    + ": its optimizer files (layout version 1, written before they recorded their layout) cannot be "
                    + "resharded under expert parallelism; resume with the saved layout, or take the weights only "
                    + "with --finetune or --no-load-optim");
        }
    }

    private static Map<String, NDArray> readOwn(Path iterDir, RankContext ctx, DistributedStep trainer,
            TrainerState state, ReadChecks checks) {
        int file = state.distributedOptimizer() ? ctx.group(GroupKind.DATA_CONTEXT).rank() : 0;
        Path rankDir = iterDir.resolve(rankDirName(ctx));
        Path f = rankDir.resolve(optimizerFile(file));
        if (checks.verifyChecksums()) {
            FileChecksums.verify(iterDir, iterDir.relativize(f).toString(), DjlMetadata.read(iterDir).checksums());
        }
        NDManager m = trainer.stateManager();
        Map<String, NDArray> out = new LinkedHashMap<>();
        try (SafetensorsReader r = SafetensorsReader.open(f)) {
            OptimizerLayout.version(r.metadata(), f);
            NDArray masters = r.load(m, "masters");
            checks.requireFinite(f.toString(), "masters", masters.toFloatArray());
            if (masters.getShape().size() != trainer.checkpointLength()) {
                throw new CheckpointException(f + ": masters have shape " + masters.getShape() + ", this rank holds "
                        + trainer.checkpointLength() + " elements (different model)");
            }
            out.put("masters", masters);
            for (String key : r.keys()) {
                if (!key.equals("masters")) {
                    out.put(key, r.load(m, key));
                }
            }
        }
        return out;
    }

    private static Map<String, NDArray> reshard(Path iterDir, ParallelLayout saved, RankContext ctx,
            List<GPTModel> chunks, DistributedStep trainer, TrainerState state, boolean distributedOptimizer,
            ReadChecks checks) {
        NDManager m = trainer.stateManager();
        Map<String, NDArray> out = new LinkedHashMap<>();
        if (checks.verifyChecksums()) { // every optimizer file may contribute to this rank's shard
            Map<String, String> recorded = DjlMetadata.read(iterDir).checksums();
            for (String file : recorded.keySet()) {
                if (file.contains("optim_")) {
                    FileChecksums.verify(iterDir, file, recorded);
                }
            }
        }
        List<ShardedParameter> params = new ArrayList<>();
        chunks.forEach(c -> params.addAll(c.parameters()));
        OptimizerLayout mine = optimizerLayout(ctx, chunks, trainer, distributedOptimizer);
        try (OptimizerReshard reshard = new OptimizerReshard(iterDir, saved, state, params)) {
            reshard.loadAll(mine, params).forEach((key, values) -> {
                checks.requireFinite(iterDir.toString(), key, values);
                try (NDArray javaBacked = m.create(values)) {
                    out.put(key, javaBacked.duplicate()); // owns its memory (create(float[]) points into a Java buffer)
                }
            });
        }
        return out;
    }

    /** Removes stale staging directories (from killed saves) and makes a fresh one. */
    private static void prepareStaging(Path root, Path staging) {
        createDirectories(root);
        try (Stream<Path> dirs = Files.list(root)) {
            for (Path d : (Iterable<Path>) dirs.filter(p -> p.getFileName().toString().startsWith(STAGING_PREFIX))::iterator) {
                deleteTree(d);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot clean " + root, e);
        }
        createDirectories(staging);
    }

    /** Renames the staging directory into place, then points the tracker at it. */
    private static void publish(Path root, Path staging, long iteration) {
        Path target = root.resolve(IterationTracker.dirName(iteration));
        try {
            if (Files.exists(target)) {
                Path old = root.resolve(STAGING_PREFIX + "old_" + target.getFileName());
                Files.move(target, old, StandardCopyOption.ATOMIC_MOVE);
                Files.move(staging, target, StandardCopyOption.ATOMIC_MOVE);
                deleteTree(old);
            } else {
                Files.move(staging, target, StandardCopyOption.ATOMIC_MOVE);
            }
            Path tmp = root.resolve(STAGING_PREFIX + IterationTracker.TRACKER);
            Files.writeString(tmp, Long.toString(iteration), StandardCharsets.UTF_8);
            Files.move(tmp, root.resolve(IterationTracker.TRACKER), StandardCopyOption.ATOMIC_MOVE,
                    StandardCopyOption.REPLACE_EXISTING);
        } catch (AtomicMoveNotSupportedException e) {
            throw new CheckpointException(root + ": the file system cannot rename atomically: " + e, e);
        } catch (IOException e) {
            throw new CheckpointException(root + ": cannot publish iteration " + iteration + ": " + e, e);
        }
    }

    /** All ranks of a TP x DP x PP grid: TP peers, then the DP group, then the pipeline, have arrived. */
    private static void worldBarrier(ProcessGroup tp, ProcessGroup dp, ProcessGroup pp) {
        tp.barrier();
        dp.barrier();
        pp.barrier();
        tp.barrier();
    }

    /**
     * Test hook: with {@code -Ddjlm.test.pauseInSaveAtIteration=N} the save of iteration N stops
     * after the rank files are written, so a test can kill the JVM in the middle of a save.
     */
    private static void pauseForTests(long iteration) {
        if (Long.getLong("djlm.test.pauseInSaveAtIteration", -1) != iteration) {
            return;
        }
        System.out.println("SAVE-IN-PROGRESS");
        System.out.flush();
        try {
            Thread.sleep(600_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static void createDirectories(Path dir) {
        try {
            Files.createDirectories(dir);
        } catch (IOException e) {
            throw new CheckpointException(dir + ": cannot create: " + e, e);
        }
    }

    private static void writeString(Path f, String text) {
        try {
            Files.writeString(f, text, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new CheckpointException(f + ": write failed: " + e, e);
        }
    }

    /** Every regular file under {@code dir}, relative to it, {@code /}-separated, sorted. */
    private static List<String> filesUnder(Path dir) {
        try (Stream<Path> all = Files.walk(dir)) {
            return all.filter(Files::isRegularFile).map(p -> dir.relativize(p).toString().replace('\\', '/'))
                    .sorted().toList();
        } catch (IOException e) {
            throw new CheckpointException(dir + ": cannot list: " + e, e);
        }
    }

    private static void deleteTree(Path dir) throws IOException {
        try (Stream<Path> all = Files.walk(dir)) {
            for (Path p : (Iterable<Path>) all.sorted(Comparator.reverseOrder())::iterator) {
                Files.deleteIfExists(p);
            }
        }
    }

}
