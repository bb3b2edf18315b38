package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.List;
import org.djlmegatron.bridge.LogitsRunner;
import org.djlmegatron.cli.Main;
import org.djlmegatron.io.SafetensorsReader;
import org.djlmegatron.training.StepResult;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * docs/checkpoints.md's walk-through: HF -> djl (TP 2) -> pretrain-gpt --load/--save -> HF. The
 * training reproduces transformers' steps (so the weights arrived intact) and the exported HF
 * checkpoint computes exactly the trained model's logits.
 */
class HfTrainHfWalkthroughTest {

    @TempDir
    Path tmp;

    @Test
    void hfToTrainingAndBack() {
        Path hf = PretrainRunner.fixtures().resolve("hf/qwen2");
        Path djl = tmp.resolve("qwen2-djl");
        Path trained = tmp.resolve("qwen2-ft");
        Path back = tmp.resolve("qwen2-ft-hf");
        assertThat(Main.run("convert", "--input", hf.toString(), "--output", djl.toString(), "--to", "djl", "--tp", "2",
                "--quiet")).isZero();
        List<StepResult> steps = PretrainRunner.run("--load", djl.toString(), "--save", trained.toString(),
                "--replay-batches", hf.resolve("golden.safetensors").toString(), "--train-iters", "3",
                "--global-batch-size", "2", "--micro-batch-size", "2", "--nproc-per-node", "2",
                "--tensor-model-parallel-size", "2", "--lr", "1e-3", "--lr-decay-style", "constant",
                "--adam-beta1", "0.9", "--adam-beta2", "0.95", "--adam-eps", "1e-8", "--weight-decay", "0.1",
                "--clip-grad", "1.0", "--hidden-dropout", "0", "--attention-dropout", "0"); // Megatron's default is 0.1
        float[] losses;
        long[] ids;
        float[] original;
        try (SafetensorsReader g = SafetensorsReader.open(hf.resolve("golden.safetensors"))) {
            losses = g.loadFloats("train_losses");
            ids = g.loadLongs("input_ids");
            original = g.loadFloats("logits");
        }
        for (int i = 0; i < 3; i++) {
            assertThat(Math.abs(steps.get(i).loss() - losses[i])).as("loss %d", i + 1).isLessThanOrEqualTo(1e-4);
        }
        assertThat(Main.run("convert", "--input", trained.toString(), "--output", back.toString(), "--to", "hf",
                "--quiet")).isZero();
        float[] fromTraining = LogitsRunner.logits(trained, ids, 2, 1, false);
        float[] fromHf = LogitsRunner.logits(back, ids, 2, 1, false);
        assertThat(fromHf).containsExactly(fromTraining);
        assertThat(HfDiff.maxAbs(fromHf, original)).as("training changed the model").isGreaterThan(1e-3);
    }

    /** max |a - b|. */
    static final class HfDiff {
        static double maxAbs(float[] a, float[] b) {
            double m = 0;
            for (int i = 0; i < a.length; i++) {
                m = Math.max(m, Math.abs(a[i] - b[i]));
            }
            return m;
        }
    }
}
