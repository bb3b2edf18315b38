package org.djlmegatron.pretrain;

import static org.assertj.core.api.Assertions.assertThat;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.djlmegatron.io.SafetensorsReader;
import org.djlmegatron.training.StepResult;

/** Transformers' own AdamW trajectory from an HF fixture (../shared/fixtures/hf/MODEL): its losses and grad norms. */
record HfGoldenTrajectory(double[] losses, double[] norms) {

    /** {@code train_losses} and {@code train_grad_norms} of a fixture's {@code golden.safetensors}. */
    static HfGoldenTrajectory of(Path golden) {
        try (SafetensorsReader g = SafetensorsReader.open(golden)) {
            return new HfGoldenTrajectory(widen(g.loadFloats("train_losses")), widen(g.loadFloats("train_grad_norms")));
        }
    }

    /** GPT-2's trajectory without dropout: {@code golden_nodropout.json} in the fixture's directory. */
    static HfGoldenTrajectory withoutDropout(Path dir) {
        try {
            JsonObject golden = JsonParser.parseString(Files.readString(dir.resolve("golden_nodropout.json")))
                    .getAsJsonObject();
            return new HfGoldenTrajectory(doubles(golden.getAsJsonArray("train_losses")),
                    doubles(golden.getAsJsonArray("train_grad_norms")));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * Fails unless {@code steps} are this trajectory's first steps, none skipped: each loss within
     * {@code lossTol}, each grad norm within {@code normTol} relative.
     */
    void assertFollowed(List<StepResult> steps, int count, double lossTol, double normTol, String what) {
        assertThat(steps).as(what).hasSize(count);
        for (int i = 0; i < count; i++) {
            StepResult s = steps.get(i);
            assertThat(s.skipped()).as("%s: step %d skipped", what, i + 1).isFalse();
            assertThat(Math.abs(s.loss() - losses[i])).as("%s: loss of step %d (%s vs %s)", what, i + 1, s.loss(),
                    losses[i]).isLessThanOrEqualTo(lossTol);
            assertThat(Math.abs(s.gradNorm() - norms[i]) / norms[i]).as("%s: grad norm of step %d (%s vs %s)", what,
                    i + 1, s.gradNorm(), norms[i]).isLessThanOrEqualTo(normTol);
        }
    }

    private static double[] widen(float[] values) {
        double[] out = new double[values.length];
        for (int i = 0; i < values.length; i++) {
            out[i] = values[i];
        }
        return out;
    }

    private static double[] doubles(JsonArray values) {
        double[] out = new double[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = values.get(i).getAsDouble();
        }
        return out;
    }
}
