package org.djlmegatron.bridge.hf;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.jni.JniUtils;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.djlmegatron.launch.LocalWorld;
import org.djlmegatron.context.ContextParallel;
import org.djlmegatron.context.CpCommType;
import org.djlmegatron.io.SafetensorsReader;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.parallel.GroupKind;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.context.DocumentMasking;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Document masking against transformers: the golden file's two 24-token rows packed into one
 * 48-token sequence, the first row's last token taken as the EOD (it occurs nowhere else), so
 * with {@code --reset-position-ids --reset-attention-mask} each document must give exactly the
 * logits transformers computed for it alone; with {@code --eod-mask-loss} the loss must be the
 * mean cross-entropy of those golden logits over every label but the one after the EOD. At CP=1
 * and CP=2 with each comm type (the fused attention, where the native library is loaded, must
 * fall back to the masked composed path). Without the flags the second document's logits differ:
 * the check can fail.
 */
class DocumentMaskingGoldenTest {

    static final int ROW = 24;
    static final int VOCAB = 512;

    static Stream<Arguments> cases() {
        List<Arguments> out = new ArrayList<>();
        for (String model : new String[] {"llama", "gpt2"}) {
            out.add(Arguments.of(model, 1, "p2p"));
            for (String comm : new String[] {"p2p", "all_gather", "a2a"}) {
                out.add(Arguments.of(model, 2, comm));
            }
        }
        return out.stream();
    }

    @ParameterizedTest(name = "{0} cp={1} {2}")
    @MethodSource("cases")
    void eachDocumentGivesItsOwnGoldenLogits(String model, int cp, String comm) {
        float[] golden;
        long[] ids;
        try (SafetensorsReader g = SafetensorsReader.open(Fixtures.hf(model).resolve("golden.safetensors"))) {
            golden = g.loadFloats("logits");
            ids = g.loadLongs("input_ids");
        }
        long eod = ids[ROW - 1];
        for (int i = 0; i < ids.length; i++) {
            assertThat(i == ROW - 1 || ids[i] != eod).as("token %d repeats the chosen EOD %d", i, eod).isTrue();
        }
        DocumentMasking masking = new DocumentMasking(eod, true, true, true);
        List<Result> ranks = run(model, cp, comm, ids, masking);
        float[] logits = new float[ids.length * VOCAB];
        double loss = 0;
        for (int r = 0; r < cp; r++) {
            long[] where = globalIndices(r, cp);
            for (int t = 0; t < where.length; t++) {
                System.arraycopy(ranks.get(r).logits, t * VOCAB, logits, (int) where[t] * VOCAB, VOCAB);
            }
            loss += ranks.get(r).loss / cp; // each rank's share, times CP (averaged over DP x CP by the trainer)
        }
        assertThat(HfGoldenLogitsTest.maxAbsDiff(logits, golden)).as("max |logits - golden|").isLessThanOrEqualTo(1e-4);
        assertThat(Math.abs(loss - goldenLoss(golden, ids))).as("loss %s", loss).isLessThanOrEqualTo(1e-5);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("models")
    void withoutTheFlagsTheSecondDocumentSeesTheFirst(String model) {
        float[] golden;
        long[] ids;
        try (SafetensorsReader g = SafetensorsReader.open(Fixtures.hf(model).resolve("golden.safetensors"))) {
            golden = g.loadFloats("logits");
            ids = g.loadLongs("input_ids");
        }
        float[] logits = run(model, 1, "p2p", ids, new DocumentMasking(ids[ROW - 1], false, false, false)).get(0).logits;
        assertThat(HfGoldenLogitsTest.maxAbsDiff(logits, golden)).isGreaterThan(1e-2);
    }

    static Stream<String> models() {
        return Stream.of("llama", "gpt2");
    }

    private record Result(float[] logits, double loss) {}

    private static List<Result> run(String model, int cp, String comm, long[] ids, DocumentMasking masking) {
        try (HfCheckpoint ckpt = HfCheckpoint.open(Fixtures.hf(model))) {
            return LocalWorld.run(RankGrid.create(cp, 1, 1, cp, 1), ctx -> {
                JniUtils.setGradMode(false);
                GPTModel gpt = new GPTModel(ctx, ckpt.config(), false);
                ckpt.loadInto(gpt);
                if (cp > 1) {
                    gpt.setContextParallel(new ContextParallel(ctx.group(GroupKind.CONTEXT), CpCommType.parse(comm)));
                }
                gpt.setDocumentMasking(masking);
                NDArray input = ctx.manager().create(ids, new Shape(1, ids.length));
                float[] logits = gpt.gatherLogits(gpt.apply(input)).toFloatArray();
                double loss = gpt.loss(input, GPTModel.shiftLabels(input)).getFloat();
                return new Result(logits, loss);
            });
        }
    }

    /** The global sequence indices of CP rank r's tokens: chunks r and 2N-1-r of 2N. */
    private static long[] globalIndices(int r, int n) {
        int total = 2 * ROW;
        int c = total / (2 * n);
        long[] out = new long[2 * c];
        for (int i = 0; i < c; i++) {
            out[i] = (long) r * c + i;
            out[c + i] = (long) (2 * n - 1 - r) * c + i;
        }
        return out;
    }

    /**
     * Mean cross-entropy of the golden logits at the packed positions against the next packed token,
     * skipping the EOD input (position 23, --eod-mask-loss) and the last position (no label).
     */
    private static double goldenLoss(float[] golden, long[] ids) {
        double sum = 0;
        int count = 0;
        for (int t = 0; t < ids.length - 1; t++) {
            if (t == ROW - 1) {
                continue;
            }
            double max = Double.NEGATIVE_INFINITY;
            for (int v = 0; v < VOCAB; v++) {
                max = Math.max(max, golden[t * VOCAB + v]);
            }
            double z = 0;
            for (int v = 0; v < VOCAB; v++) {
                z += Math.exp(golden[t * VOCAB + v] - max);
            }
            sum += Math.log(z) + max - golden[t * VOCAB + (int) ids[t + 1]];
            count++;
        }
        return sum / count;
    }
}
