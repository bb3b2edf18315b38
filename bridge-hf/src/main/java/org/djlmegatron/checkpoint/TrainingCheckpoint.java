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
import org.djlmegatron.training.DistributedStep;

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

    /** Saves iteration {@code state.iteration()} under {@code root}. Collective. */
    public static void save(Path root, RankContext ctx, GPTModel model, DistributedStep trainer, TrainerState state) {
        ProcessGroup tp = ctx.tensorGroup();
        ProcessGroup dp = ctx.group(GroupKind.DATA_CONTEXT);
        ProcessGroup pp = ctx.group(GroupKind.PIPELINE);
        Path staging = root.resolve(STAGING_PREFIX + IterationTracker.dirName(state.iteration()));
        if (ctx.rank() == 0) {
            prepareStaging(root, staging);
        }
        worldBarrier(tp, dp, pp);
        ParallelLayout layout = layoutOf(ctx);
        Path rankDir = staging.resolve(rankDirName(ctx));
        createDirectories(rankDir);
        boolean firstReplica = firstReplicaOfExperts(ctx);
        if (firstReplica) {
            Map<String, NDArray> weights = new LinkedHashMap<>();
            for (ShardedParameter p : model.parameters()) {
                if (!model.isFirstStage() && p.name().startsWith("embedding.")) {
                    continue; // the last stage's tied copy: the first stage's file holds the embedding
                }
                weights.put(p.name(), p.parameter().getArray().stopGradient());
            }
            SafetensorsWriter.write(rankDir.resolve(DjlMetadata.MODEL_FILE), weights, Map.of("format", "pt"));
        }
        if (state.distributedOptimizer() || firstReplica) {
            Map<String, NDArray> optim = new LinkedHashMap<>();
            optim.put("masters", trainer.masters());
            trainer.optimizer().state().forEach(optim::put);
            SafetensorsWriter.write(rankDir.resolve(optimizerFile(state.distributedOptimizer() ? dp.rank() : 0)), optim,
                    Map.of());
        }
        pauseForTests(state.iteration());
        worldBarrier(tp, dp, pp);
        if (ctx.rank() == 0) {
            Map<String, String> contents = new LinkedHashMap<>();
            contents.put(DjlMetadata.MODEL, DjlMetadata.MODEL_FILE);
            contents.put(OPTIMIZER, "optim_dp_RRR.safetensors");
            writeString(staging.resolve(TRAINER_FILE),
                    new GsonBuilder().setPrettyPrinting().create().toJson(state));
            new DjlMetadata(state.iteration(), layout, model.config(), contents)
                    .withChecksums(FileChecksums.of(staging, filesUnder(staging))).write(staging);
            publish(root, staging, state.iteration());
        }
        worldBarrier(tp, dp, pp);
    }

    /** The run's tensor, pipeline and expert parallel sizes. */
    private static ParallelLayout layoutOf(RankContext ctx) {
        return new ParallelLayout(ctx.tensorGroup().size(), ctx.group(GroupKind.PIPELINE).size(),
                ctx.group(GroupKind.EXPERT).size());
    }

    /** This rank's directory, Megatron's {@code mp_rank_TT[_PPP][_EEE]}. */
    private static String rankDirName(RankContext ctx) {
        return new RankFile(ctx.tensorGroup().rank(), ctx.group(GroupKind.PIPELINE).rank(),
                ctx.group(GroupKind.EXPERT).rank()).dirName(layoutOf(ctx));
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
     * Refuses, before any rank starts, restoring the optimizer state of a checkpoint saved with
     * pipelining at another layout, or one saved without it at PP > 1: the reshard reads one flat
     * vector per tensor rank, and stages have one each.
     */
    public static void checkPipelineResumable(Path iterDir, TrainerState state, int tp, int pp, int dp,
            boolean distributedOptimizer) {
        int savedTp = savedTensorParallel(iterDir);
        int savedPp = DjlMetadata.read(iterDir).layout().pp();
        boolean same = savedTp == tp && savedPp == pp && state.dpSize() == dp
                && state.distributedOptimizer() == distributedOptimizer;
        if ((savedPp > 1 || pp > 1) && !same) {
            throw new CheckpointException(iterDir + ": saved at TP " + savedTp + " x PP " + savedPp + " x DP "
                    + state.dpSize() + (state.distributedOptimizer() ? " with the distributed optimizer" : "")
                    + ", resumed at TP " + tp + " x PP " + pp + " x DP " + dp
                    + (distributedOptimizer ? " with the distributed optimizer" : "")
                    + ": the optimizer state cannot be resharded across pipeline layouts yet; resume with the same "
                    + "layout, or give --no-load-optim (or --finetune) to load only the weights");
        }
    }

    /** The tensor-parallel size a checkpoint was saved at. */
    public static int savedTensorParallel(Path iterDir) {
        return DjlMetadata.read(iterDir).layout().tp();
    }

    /**
     * Restores this rank's optimizer state (masters and moments), counters and loss scale. The
     * same layout reads this rank's own file; another TP size, DP size or optimizer sharding goes
     * through {@link OptimizerReshard}.
     */
    public static void restore(Path iterDir, RankContext ctx, GPTModel model, DistributedStep trainer, TrainerState state,
            boolean distributedOptimizer, ReadChecks checks) {
        ProcessGroup tp = ctx.tensorGroup();
        ProcessGroup dp = ctx.group(GroupKind.DATA_CONTEXT);
        ProcessGroup pp = ctx.group(GroupKind.PIPELINE);
        int savedTp = savedTensorParallel(iterDir);
        boolean sameLayout = savedTp == tp.size() && state.dpSize() == dp.size()
                && state.distributedOptimizer() == distributedOptimizer;
        checkPipelineResumable(iterDir, state, tp.size(), pp.size(), dp.size(), distributedOptimizer);
        checkExpertLayout(iterDir, ctx.group(GroupKind.EXPERT).size(), sameLayout);
        Map<String, NDArray> optState = sameLayout ? readOwn(iterDir, ctx, trainer, state, checks)
                : reshard(iterDir, dp, model, trainer, state, savedTp, checks);
        NDArray masters = optState.remove("masters");
        trainer.masters().set(new NDIndex("..."), masters);
        masters.close();
        trainer.optimizer().loadState(optState);
        trainer.scaler().loadState(state.lossScaler());
        trainer.restoreCounters(state.iteration(), state.updates());
        trainer.writeBackMasters();
    }

    /**
     * The optimizer state is resharded (another TP or DP size, or optimizer sharding) only without
     * expert parallelism on either side: {@link OptimizerReshard} does not know the expert buffer.
     * The weights alone reshard at any expert-parallel size ({@code --finetune}, {@code --no-load-optim}).
     */
    private static void checkExpertLayout(Path iterDir, int ep, boolean sameLayout) {
        int savedEp = DjlMetadata.read(iterDir).layout().ep();
        if (savedEp != ep || ep > 1 && !sameLayout) {
            throw new CheckpointException(iterDir + ": saved at --expert-model-parallel-size " + savedEp + ", resumed at "
                    + ep + (savedEp == ep ? " with another TP size, DP size or optimizer sharding" : "")
                    + ": the optimizer state cannot be resharded under expert parallelism yet; resume with the saved "
                    + "layout, or take the weights only with --finetune or --no-load-optim");
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
        NDManager m = trainer.masters().getManager();
        Map<String, NDArray> out = new LinkedHashMap<>();
        try (SafetensorsReader r = SafetensorsReader.open(f)) {
            NDArray masters = r.load(m, "masters");
            checks.requireFinite(f.toString(), "masters", masters.toFloatArray());
            if (!masters.getShape().equals(trainer.masters().getShape())) {
                throw new CheckpointException(f + ": masters have shape " + masters.getShape() + ", this rank holds "
                        + trainer.masters().getShape() + " (different model)");
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

    private static Map<String, NDArray> reshard(Path iterDir, ProcessGroup dp, GPTModel model, DistributedStep trainer,
            TrainerState state, int savedTp, ReadChecks checks) {
        long padded = trainer.layout().paddedSize();
        long length = trainer.masters().getShape().get(0);
        long start = length == padded ? 0 : length * dp.rank();
        NDManager m = trainer.masters().getManager();
        Map<String, NDArray> out = new LinkedHashMap<>();
        if (checks.verifyChecksums()) { // every optimizer file may contribute to this rank's shard
            Map<String, String> recorded = DjlMetadata.read(iterDir).checksums();
            for (String file : recorded.keySet()) {
                if (file.contains("optim_")) {
                    FileChecksums.verify(iterDir, file, recorded);
                }
            }
        }
        try (OptimizerReshard reshard = new OptimizerReshard(iterDir, state, savedTp, model.parameters())) {
            reshard.loadAll(start, length).forEach((key, values) -> {
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
