package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.Model;
import ai.djl.training.EasyTrain;
import ai.djl.training.listener.TrainingListener;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.djlmegatron.checkpoint.CheckpointListener;
import org.djlmegatron.launch.DistributedWorld;
import org.djlmegatron.comm.LaunchConfig;
import org.djlmegatron.comm.ThreadProcessGroup;
import org.djlmegatron.data.DataBlend;
import org.djlmegatron.data.DatasetSplits;
import org.djlmegatron.data.GPTDatasetConfig;
import org.djlmegatron.data.SplitMatrix;
import org.djlmegatron.data.batches.MegatronPretrainingSampler;
import org.djlmegatron.data.batches.MockData;
import org.djlmegatron.data.batches.RowsDataset;
import org.djlmegatron.data.batches.RowsSource;
import org.djlmegatron.data.batches.SamplesSource;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.training.StepResult;
import org.djlmegatron.training.djl.ParallelTrainer;
import org.djlmegatron.transformer.TransformerConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import picocli.CommandLine;

/**
 * DJL's {@code EasyTrain.fit} driving {@link ParallelTrainer} (a DJL {@code DistributedStep} per rank, fed
 * by a {@link RowsDataset} through {@link MegatronPretrainingSampler}) reproduces
 * {@code pretrain-gpt}'s trajectory for the same model, data and seed, bit for bit: at TP=2 and at
 * DP=2 with the distributed optimizer, two micro-batches per rank and step, dropout on.
 */
class EasyTrainParityTest {

    private static final List<String> BASE = List.of("--num-layers", "2", "--hidden-size", "64",
            "--num-attention-heads", "4", "--ffn-hidden-size", "128", "--vocab-size", "128", "--seq-length", "16",
            "--max-position-embeddings", "32", "--mock-data", "--train-iters", "6", "--micro-batch-size", "1",
            "--global-batch-size", "4", "--lr", "1e-3", "--lr-warmup-iters", "2", "--weight-decay", "0.1",
            "--clip-grad", "1.0", "--seed", "11");

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"tp2", "dp2-distopt"})
    void easyTrainFitReproducesPretrainGpt(String layout) {
        TrajectoryParity.Variant v = layout.equals("tp2") ? TrajectoryParity.TP2 : TrajectoryParity.DP2_DISTOPT;
        List<StepResult> reference = TrajectoryParity.run(BASE, v);
        List<String> args = new ArrayList<>(BASE);
        args.addAll(v.flags());
        List<StepResult> djl = easyTrain(args.toArray(new String[0]), layout.equals("tp2") ? 2 : 1, null);
        assertThat(djl).hasSize(6);
        TrajectoryParity.assertIdentical(reference, djl, "EasyTrain " + layout);
        assertThat(djl.get(5).loss()).isLessThan(djl.get(0).loss());
    }

    /**
     * The checkpoint listener writes pretrain-gpt's format: 3 iterations under EasyTrain, saved at the
     * epoch's end, then {@code pretrain-gpt --load} resumes and runs iterations 4 to 6 as the
     * uninterrupted run does (DP=2, distributed optimizer: sharded optimizer state).
     */
    @Test
    void checkpointListenerSavesWhatPretrainGptResumes(@TempDir Path dir) {
        List<StepResult> reference = TrajectoryParity.run(BASE, TrajectoryParity.DP2_DISTOPT);
        List<String> first = TrajectoryParity.replace(BASE, "--train-iters", "3");
        first.addAll(TrajectoryParity.DP2_DISTOPT.flags());
        easyTrain(first.toArray(new String[0]), 1, dir);
        List<String> resumed = new ArrayList<>(BASE);
        resumed.addAll(List.of("--load", dir.toString()));
        List<StepResult> rest = TrajectoryParity.run(resumed, TrajectoryParity.DP2_DISTOPT);
        TrajectoryParity.assertIdentical(reference.subList(3, 6), rest, "resumed from CheckpointListener");
    }

    /**
     * Megatron data through DJL: a blend of two preprocessed {@code .bin/.idx} datasets split
     * {@code 95,5,0}, built by {@link DatasetSplits} and read through {@link SamplesSource} and a
     * {@link RowsDataset}, gives pretrain-gpt's {@code --data-path} trajectory bit for bit (DP=2, distributed optimizer).
     */
    @Test
    void megatronBlendAsDjlDatasetReproducesDataPathTraining(@TempDir Path dir) throws Exception {
        List<String> lines = Files.readAllLines(PretrainRunner.fixtures().resolve("megatron_preprocess/corpus.jsonl"));
        String[] prefixes = new String[2];
        for (int i = 0; i < 2; i++) {
            Path jsonl = Files.write(dir.resolve("part" + i + ".jsonl"), lines.subList(i * 150, (i + 1) * 150));
            int rc = org.djlmegatron.cli.Main.run("preprocess-data", "--input", jsonl.toString(), "--json-keys", "text",
                    "--output-prefix", dir.resolve("part" + i).toString(), "--tokenizer-type", "ByteLevelTokenizer",
                    "--append-eod", "--workers", "1");
            assertThat(rc).isZero();
            prefixes[i] = dir.resolve("part" + i + "_text_document").toString();
        }
        List<String> base = new ArrayList<>(List.of("--data-path", "0.3", prefixes[0], "0.7", prefixes[1], "--split", "95,5,0",
                "--data-cache-path", dir.resolve("cache").toString()));
        base.addAll(BASE.subList(0, BASE.indexOf("--mock-data")));
        base.addAll(BASE.subList(BASE.indexOf("--mock-data") + 1, BASE.size()));
        base = TrajectoryParity.replace(TrajectoryParity.replace(base, "--seq-length", "32"), "--vocab-size", "384");
        List<StepResult> reference = TrajectoryParity.run(base, TrajectoryParity.DP2_DISTOPT);
        List<String> args = new ArrayList<>(base);
        args.addAll(TrajectoryParity.DP2_DISTOPT.flags());
        TrajectoryParity.assertIdentical(reference, easyTrain(args.toArray(new String[0]), 1, null), "EasyTrain on a blend");
    }

    /** The same run as a DJL user writes it: a Model, a training config with listeners, EasyTrain.fit. */
    private static List<StepResult> easyTrain(String[] args, int tp, Path save) {
        PretrainOptions o = new PretrainOptions();
        new CommandLine(o).parseArgs(args);
        TransformerConfig cfg = o.modelConfig();
        int gbs = o.globalBatchSize;
        RowsSource data;
        DatasetSplits splits = null;
        if (o.dataPath != null) { // Megatron's sample counts for the splits, as pretrain-gpt asks for them
            Integer[] sizes = {Math.toIntExact(o.trainIters * gbs), 0, o.evalIters * gbs};
            splits = DatasetSplits.build(DataBlend.parse(o.dataPath), SplitMatrix.parse(o.split), sizes,
                    new GPTDatasetConfig(o.seqLength, o.seed, o.dataCachePath));
            data = new SamplesSource(splits.train().orElseThrow(), cfg.vocabSize(), "--data-path");
        } else {
            data = new MockData(o.seqLength, cfg.vocabSize(), o.seed);
        }
        RankGrid grid = RankGrid.create(2, tp, 1, 1, 1);
        String key = ThreadProcessGroup.STRICT_SENDS_PROPERTY;
        System.setProperty(key, "true");
        try {
            return DistributedWorld.run(grid, LaunchConfig.singleNode(2, Duration.ofSeconds(120)), ctx -> {
                List<TrainingListener> listeners = new ArrayList<>(List.of(ctx.rank() == 0
                        ? TrainingListener.Defaults.logging() : TrainingListener.Defaults.basic()));
                if (save != null) {
                    listeners.add(new CheckpointListener(save, o.seed, String.join(" ", args)));
                }
                return EasyTrainRun.onRank(ctx, o, data, listeners);
            }).get(0);
        } finally {
            System.clearProperty(key);
            if (splits != null) {
                splits.close();
            }
        }
    }
}
