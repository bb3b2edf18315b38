package org.djlmegatron.pretrain;

import java.util.List;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Test;

class Fp16TrainingTest {
    @Test
    void probe() {
        for (String scale : new String[] {"4096", "1099511627776"}) {
            long t0 = System.nanoTime();
            List<StepResult> r = PretrainRunner.run("--mock-data", "--fp16", "--num-layers", "2", "--hidden-size", "64",
                    "--num-attention-heads", "4", "--seq-length", "32", "--vocab-size", "128", "--micro-batch-size", "4",
                    "--train-iters", "60", "--lr", "3e-3", "--lr-decay-style", "constant", "--initial-loss-scale", scale);
            System.out.println("scale " + scale + " took " + (System.nanoTime() - t0) / 1e9);
            for (StepResult s : r) {
                System.out.printf("%d loss %.4f norm %.4f lr %.5f scale %.0f skipped %s%n", s.iteration(), s.loss(), s.gradNorm(), s.lr(), s.lossScale(), s.skipped());
            }
        }
    }
}
