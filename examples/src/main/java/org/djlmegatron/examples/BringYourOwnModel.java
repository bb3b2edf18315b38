package org.djlmegatron.examples;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Activation;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.nn.ColumnParallelLinear;
import org.djlmegatron.nn.ParallelBlock;
import org.djlmegatron.nn.RowParallelLinear;
import org.djlmegatron.nn.ShardLayout;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.nn.VocabParallelCrossEntropy;
import org.djlmegatron.nn.VocabParallelEmbedding;
import org.djlmegatron.optim.FlatAdamW;
import org.djlmegatron.optim.LearningRateSchedule;
import org.djlmegatron.parallel.RankContext;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.training.DistributedStep;
import org.djlmegatron.training.model.MicroBatch;
import org.djlmegatron.training.StepConfig;
import org.djlmegatron.training.model.TrainableModel;
import org.djlmegatron.training.model.TrainableParameter;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * "Bring your own model": a custom DJL block built from the parallel layers, trained with the
 * project's {@link DistributedStep} on tensor-parallel thread ranks. The model predicts the next token
 * from the last two (vocab-parallel embedding, a column-parallel / row-parallel MLP, a
 * vocab-parallel output layer and cross-entropy); the data are arithmetic progressions modulo
 * the vocabulary, so the last two tokens determine the next one. The same model is trained at
 * TP=1 and at TP=2 from the same initial weights: both losses fall, and they agree.
 */
@Command(name = "BringYourOwnModel", mixinStandardHelpOptions = true,
        description = "Train a custom parallel DJL block with the project's Trainer at TP=1 and TP=2.")
public final class BringYourOwnModel implements Callable<Integer> {

    /** Vocabulary, width and MLP width of the model. */
    static final int VOCAB = 128;
    static final int HIDDEN = 64;
    static final int FFN = 256;
    static final int SEQ = 32;
    static final int BATCH = 16;

    @Option(names = "--train-iters", defaultValue = "200", description = "optimizer steps (default: ${DEFAULT-VALUE})")
    int trainIters;

    public static void main(String[] args) {
        System.exit(new CommandLine(new BringYourOwnModel()).execute(args));
    }

    @Override
    public Integer call() {
        List<Double> tp1 = train(1, trainIters);
        List<Double> tp2 = train(2, trainIters);
        System.out.println("iteration   loss TP=1   loss TP=2");
        for (int i = 0; i < trainIters; i += Math.max(1, trainIters / 8)) {
            System.out.printf(Locale.ROOT, "%9d   %9.4f   %9.4f%n", i + 1, tp1.get(i), tp2.get(i));
        }
        System.out.printf(Locale.ROOT, "%9d   %9.4f   %9.4f%n", trainIters, last(tp1), last(tp2));
        System.out.printf(Locale.ROOT, "loss went down %.3f -> %.3f; TP=1 and TP=2 agree to %.1e%n",
                tp2.get(0), last(tp2), maxDiff(tp1, tp2));
        return 0;
    }

    /** The model: a parallel block whose parameters the trainer can see. */
    public static final class TwoTokenLm extends ParallelBlock implements TrainableModel {

        private final VocabParallelEmbedding embedding;
        private final ColumnParallelLinear fc1;
        private final RowParallelLinear fc2;
        private final ColumnParallelLinear output;
        private final VocabParallelCrossEntropy crossEntropy;

        public TwoTokenLm(RankContext ctx) {
            super(ctx);
            embedding = part("embedding", new VocabParallelEmbedding(ctx, VOCAB, HIDDEN));
            // [x_t ; x_{t-1}] -> FFN, split by output features: each rank holds FFN/tp rows
            fc1 = part("fc1", ColumnParallelLinear.builder(ctx).setInFeatures(2 * HIDDEN).setOutFeatures(FFN).build());
            // FFN -> HIDDEN, split by input features; its partial sums are all-reduced
            fc2 = part("fc2", RowParallelLinear.builder(ctx).setInFeatures(FFN).setOutFeatures(HIDDEN).build());
            // HIDDEN -> VOCAB, split by vocabulary rows: no rank ever holds all logits
            output = part("output", ColumnParallelLinear.builder(ctx).setInFeatures(HIDDEN).setOutFeatures(VOCAB)
                    .optBias(false).build());
            crossEntropy = new VocabParallelCrossEntropy(tp);
        }

        /** Token ids {@code [b, s]} to this rank's slice of the logits {@code [b, s, VOCAB/tp]}. */
        @Override
        public NDArray apply(NDArray ids) {
            NDArray e = embedding.apply(ids); // [b, s, h], the same on every rank
            long b = e.getShape().get(0);
            long s = e.getShape().get(1);
            NDArray zeros = e.getManager().zeros(new Shape(b, 1, HIDDEN));
            NDArray previous = zeros.concat(e.get(new NDIndex(":, 0:{}", s - 1)), 1); // x_{t-1}, 0 at t=0
            NDArray x = e.concat(previous, -1);
            NDArray h = fc2.apply(Activation.relu(fc1.apply(x))); // column- then row-parallel: one all-reduce
            return output.apply(h);
        }

        @Override
        public NDArray loss(NDArray inputs, NDArray labels) {
            return crossEntropy.meanLoss(apply(inputs), labels);
        }

        @Override
        public List<TrainableParameter> trainableParameters() {
            List<TrainableParameter> out = new ArrayList<>();
            for (ShardedParameter p : parameters()) {
                out.add(new TrainableParameter(p.name(), p.parameter().getArray(), p.layout() == ShardLayout.REPLICATED,
                        p.fullShape().dimension() >= 2, false, p.tpPartialGrad() && tp.isParallel()));
            }
            return out;
        }

        /** Replicated weights that saw only part of the work have partial gradients: sum them. */
        @Override
        public void reduceTensorParallelGradients() {
            for (ShardedParameter p : parameters()) {
                if (p.tpPartialGrad() && tp.isParallel()) {
                    try (NDArray g = p.parameter().getArray().getGradient();
                            NDArray sum = tp.group().allReduce(g, ReduceOp.SUM)) {
                        g.subi(g).addi(sum);
                    }
                }
            }
        }
    }

    /** Trains the model on {@code tp} thread ranks; returns the loss of every iteration. */
    public static List<Double> train(int tp, int iters) {
        StepConfig config = StepConfig.builder(BATCH, LearningRateSchedule.constant(3e-3))
                .optimizer(() -> new FlatAdamW(0.9, 0.95, 1e-8, 0.0))
                .build();
        return LocalWorld.run(RankGrid.create(tp, tp, 1, 1, 1), ctx -> {
            TwoTokenLm model = new TwoTokenLm(ctx);
            model.initializeRandom(42, 0.05f); // full tensors from the seed, then sharded: same model at any TP
            List<Double> losses = new ArrayList<>();
            try (DistributedStep trainer = new DistributedStep(ctx, model, config)) {
                for (int it = 0; it < iters; it++) {
                    losses.add(trainer.step(List.of(batch(it))).loss());
                }
            }
            return losses;
        }).get(0);
    }

    /** Rows {@code start, start+stride, ...} modulo the vocabulary, stride in 1..7. */
    static MicroBatch batch(int iteration) {
        long[][] rows = new long[BATCH][SEQ + 1];
        for (int r = 0; r < BATCH; r++) {
            SplittableRandom rng = new SplittableRandom(iteration * 1000L + r);
            long start = rng.nextInt(VOCAB);
            long stride = 1 + rng.nextInt(7);
            for (int t = 0; t <= SEQ; t++) {
                rows[r][t] = (start + stride * t) % VOCAB;
            }
        }
        return MicroBatch.shifted(rows);
    }

    static double last(List<Double> xs) {
        return xs.get(xs.size() - 1);
    }

    static double maxDiff(List<Double> a, List<Double> b) {
        double m = 0;
        for (int i = 0; i < a.size(); i++) {
            m = Math.max(m, Math.abs(a.get(i) - b.get(i)));
        }
        return m;
    }
}
