package org.djlmegatron.examples;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.jni.JniUtils;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.concurrent.Callable;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.data.ByteLevelTokenizer;
import org.djlmegatron.data.GPTDataset;
import org.djlmegatron.data.GPTDatasetConfig;
import org.djlmegatron.data.IndexedDataset;
import org.djlmegatron.data.IndexedDatasetBuilder;
import org.djlmegatron.data.Split;
import org.djlmegatron.data.TokenDType;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.optim.FlatAdamW;
import org.djlmegatron.optim.LearningRateSchedule;
import org.djlmegatron.optim.LearningRateSchedule.AnnealStyle;
import org.djlmegatron.optim.LearningRateSchedule.DecayStyle;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.training.DistributedStep;
import org.djlmegatron.training.model.MicroBatch;
import org.djlmegatron.training.StepConfig;
import org.djlmegatron.transformer.TransformerConfig;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Pretrains a small GPT from scratch with the library, no command line in between: a generated
 * text corpus written as a Megatron {@code .bin/.idx} dataset (byte-level tokens), Megatron's GPT
 * samples cut from it, and the {@link DistributedStep} on tensor-parallel thread ranks with sequence
 * parallelism. Prints the loss as it falls and how many next bytes of a held-out sample the
 * trained model predicts.
 */
@Command(name = "PretrainFromScratch", mixinStandardHelpOptions = true,
        description = "Pretrain a small GPT from scratch on a generated corpus (TP=2, sequence parallel).")
public final class PretrainFromScratch implements Callable<Integer> {

    @Option(names = "--train-iters", defaultValue = "150", description = "optimizer steps (default: ${DEFAULT-VALUE})")
    int trainIters;

    @Option(names = "--tp", defaultValue = "2", description = "tensor-parallel thread ranks (default: ${DEFAULT-VALUE})")
    int tp;

    @Option(names = "--work-dir", description = "where the dataset goes (default: a temporary directory)")
    Path workDir;

    /** Per-iteration losses, and the held-out next-byte accuracy of the trained model. */
    public record Result(List<Double> losses, double accuracy, String heldOut, String predicted) {}

    public static void main(String[] args) {
        System.exit(new CommandLine(new PretrainFromScratch()).execute(args));
    }

    @Override
    public Integer call() throws IOException {
        try (WorkDir dir = WorkDir.of(workDir, "pretrain-from-scratch", System.out)) {
            Result r = run(dir.path(), trainIters, tp, System.out);
            System.out.printf(Locale.ROOT, "held-out text:   %s%npredicted bytes: %s%n", r.heldOut(), r.predicted());
            System.out.printf(Locale.ROOT, "loss %.3f -> %.3f; held-out next-byte accuracy %.0f%%%n",
                    r.losses().get(0), r.losses().get(r.losses().size() - 1), 100 * r.accuracy());
            return 0;
        }
    }

    public static Result run(Path dir, int trainIters, int tp, PrintStream out) throws IOException {
        // 1. Data: a Megatron dataset of byte-level tokens, one document per sentence, EOD-terminated.
        Path prefix = dir.resolve("sentences");
        ByteLevelTokenizer tokenizer = new ByteLevelTokenizer();
        try (IndexedDatasetBuilder builder = IndexedDatasetBuilder.create(prefix, TokenDType.UINT16)) {
            Random rng = new Random(7);
            for (int d = 0; d < 4000; d++) {
                int[] bytes = tokenizer.encode(sentence(rng));
                int[] doc = Arrays.copyOf(bytes, bytes.length + 1);
                doc[bytes.length] = tokenizer.eod();
                builder.addDocument(doc);
            }
            builder.finish();
        }

        // 2. Megatron's GPT samples: 64 tokens + 1, across document boundaries, shuffled.
        int seq = 64;
        int batch = 8;
        TransformerConfig cfg = TransformerConfig.builder()
                .numLayers(2).hiddenSize(64).numAttentionHeads(4).numQueryGroups(2)
                .vocabSize(384) // 257 byte-level tokens, padded as Megatron pads (a multiple of 128)
                .maxPositionEmbeddings(seq).build();
        try (IndexedDataset data = IndexedDataset.open(prefix)) {
            int docs = (int) data.sequenceCount();
            GPTDatasetConfig samples = new GPTDatasetConfig(seq, 1234, null);
            GPTDataset train = GPTDataset.build(data, Split.TRAIN, 0, docs - 100, trainIters * batch, samples);
            GPTDataset heldOut = GPTDataset.build(data, Split.VALID, docs - 100, docs, null, samples);
            out.printf(Locale.ROOT, "dataset: %,d documents, %,d tokens; %,d training samples of %d tokens%n",
                    data.documentCount(), data.tokenCount(), train.size(), seq + 1);

            // 3. Train on tp thread ranks; every rank returns the same results, rank 0's are kept.
            StepConfig tc = StepConfig.builder(batch,
                            new LearningRateSchedule(3e-3, 3e-4, 10, trainIters, DecayStyle.COSINE, 0, AnnealStyle.LINEAR))
                    .optimizer(() -> new FlatAdamW(0.9, 0.95, 1e-8, 0.01))
                    .build();
            return LocalWorld.run(RankGrid.create(tp, tp, 1, 1, 1), ctx -> {
                GPTModel model = new GPTModel(ctx, cfg, true); // sequence parallel
                model.initializeRandom(1234, 0.02f);
                List<Double> losses = new ArrayList<>();
                try (DistributedStep trainer = new DistributedStep(ctx, model, tc)) {
                    for (int it = 0; it < trainIters; it++) {
                        long[][] rows = new long[batch][];
                        for (int r = 0; r < batch; r++) {
                            rows[r] = train.sample(it * batch + r);
                        }
                        double loss = trainer.step(List.of(MicroBatch.shifted(rows))).loss();
                        losses.add(loss);
                        if (ctx.rank() == 0 && (it % 25 == 0 || it == trainIters - 1)) {
                            out.printf(Locale.ROOT, "iteration %4d  loss %.4f%n", it + 1, loss);
                        }
                    }
                }
                // 4. Greedy next-byte predictions on a held-out sample (no gradient needed).
                JniUtils.setGradMode(false);
                long[] sample = heldOut.sample(0);
                long[] inputs = Arrays.copyOf(sample, seq);
                NDArray ids = ctx.manager().create(inputs, new Shape(1, seq));
                long[] predicted = model.gatherLogits(model.apply(ids)).argMax(-1).toLongArray();
                int hits = 0;
                for (int t = 0; t < seq; t++) {
                    hits += predicted[t] == sample[t + 1] ? 1 : 0;
                }
                long[] target = Arrays.copyOfRange(sample, 1, seq + 1);
                return new Result(losses, hits / (double) seq, tokenizer.decode(target), tokenizer.decode(predicted));
            }).get(0);
        }
    }

    private static final String[] SUBJECTS = {"the cat", "a dog", "the old man", "my sister", "the robot", "a bird"};
    private static final String[] VERBS = {"sees", "likes", "follows", "paints", "finds", "remembers"};
    private static final String[] OBJECTS = {"the red ball", "a small house", "the river", "an apple", "the moon"};

    /** One sentence of a tiny grammar: enough structure for a small model to learn quickly. */
    static String sentence(Random rng) {
        return SUBJECTS[rng.nextInt(SUBJECTS.length)] + " " + VERBS[rng.nextInt(VERBS.length)] + " "
                + OBJECTS[rng.nextInt(OBJECTS.length)] + ".";
    }

}
