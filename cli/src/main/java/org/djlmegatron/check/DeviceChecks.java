package org.djlmegatron.check;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import org.djlmegatron.launch.DistributedWorld;
import org.djlmegatron.comm.LaunchConfig;
import org.djlmegatron.comm.RankDevices;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.nn.ShardedParameter;
import org.djlmegatron.parallel.RankGrid;
import org.djlmegatron.transformer.AttentionBackend;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * End-to-end checks of a device on one rank, each against a reference computed in the same run:
 * bf16 forward and backward of a small Llama-like GPT against fp32, and fused attention (libtorch
 * SDPA) against the composed one. What a new machine or a new libtorch has to pass before its
 * numbers mean anything.
 */
public final class DeviceChecks {

    /** One check's outcome: measured figures and whether they are within the bound. */
    public record Check(String name, boolean passed, String detail) {
        @Override
        public String toString() {
            return String.format(Locale.ROOT, "%-44s %s  %s", name, passed ? "ok  " : "FAIL", detail);
        }
    }

    /** What the model computed: loss, full logits and every parameter's gradient (fp32 copies). */
    private record Pass(double loss, float[] logits, Map<String, float[]> grads) {}

    private static final TransformerConfig MODEL = TransformerConfig.builder()
            .numLayers(2).hiddenSize(128).numAttentionHeads(4).numQueryGroups(2)
            .vocabSize(512).maxPositionEmbeddings(64).build();

    private DeviceChecks() {}

    /** Runs every check on {@code devices}' first device; the caller decides what a failure means. */
    public static List<Check> run(RankDevices devices) {
        List<Check> out = new ArrayList<>();
        Pass fp32Unfused = forwardBackward(devices, DataType.FLOAT32, AttentionBackend.UNFUSED);
        Pass fp32Fused = forwardBackward(devices, DataType.FLOAT32, AttentionBackend.FUSED);
        out.add(compare("fused attention == composed (fp32)", fp32Unfused, fp32Fused, 1e-5, 1e-4, 0.99999));
        Pass bf16 = forwardBackward(devices, DataType.BFLOAT16, AttentionBackend.FUSED);
        // bf16 keeps 8 bits of mantissa: logits within a few percent, gradients pointing the same way
        out.add(compare("bf16 forward+backward vs fp32", fp32Unfused, bf16, 3e-2, 0.5, 0.98));
        return out;
    }

    private static Pass forwardBackward(RankDevices devices, DataType type, AttentionBackend backend) {
        LaunchConfig one = LaunchConfig.singleNode(1, LaunchConfig.DEFAULT_TIMEOUT);
        return DistributedWorld.run(RankGrid.create(1, 1, 1, 1, 1), one, devices, ctx -> {
            GPTModel model = new GPTModel(ctx, MODEL, false);
            model.setParameterType(type);
            model.initializeRandom(1234, 0.02f);
            model.setAttentionBackend(backend);
            long[] ids = new Random(5).longs(2 * 48, 0, MODEL.vocabSize()).toArray();
            try (NDManager step = ctx.manager().newSubManager()) {
                NDArray input = step.create(ids, new Shape(2, 48));
                NDArray logits = model.apply(input);
                NDArray loss = model.lossFromLogits(logits, GPTModel.shiftLabels(input));
                float[] logitValues = logits.toType(DataType.FLOAT32, false).toFloatArray();
                ctx.tape().backward(loss);
                Map<String, float[]> grads = new LinkedHashMap<>();
                for (ShardedParameter p : model.parameters()) {
                    try (NDArray g = p.parameter().getArray().getGradient()) {
                        grads.put(p.name(), g.toType(DataType.FLOAT32, false).toFloatArray());
                    }
                }
                return new Pass(loss.toType(DataType.FLOAT32, false).getFloat(), logitValues, grads);
            }
        }).get(0);
    }

    /**
     * Passes when the logits' largest difference relative to the largest reference logit, and the
     * loss's relative difference, are at most {@code logitTol}, no gradient differs by more than
     * {@code gradTol} relative to its largest element, and every gradient's cosine similarity with
     * the reference is at least {@code minCosine}.
     */
    private static Check compare(String name, Pass ref, Pass got, double logitTol, double gradTol, double minCosine) {
        double logitErr = maxDiff(ref.logits, got.logits) / maxAbs(ref.logits);
        double lossErr = Math.abs(ref.loss - got.loss) / Math.abs(ref.loss);
        double worstRel = 0;
        double worstCos = 1;
        for (Map.Entry<String, float[]> e : ref.grads.entrySet()) {
            float[] g = got.grads.get(e.getKey());
            worstRel = Math.max(worstRel, maxDiff(e.getValue(), g) / Math.max(maxAbs(e.getValue()), 1e-30));
            worstCos = Math.min(worstCos, cosine(e.getValue(), g));
        }
        boolean ok = logitErr <= logitTol && lossErr <= logitTol && worstRel <= gradTol && worstCos >= minCosine;
        String detail = String.format(Locale.ROOT, "logits rel. diff %.1e, loss %.5f vs %.5f, gradients: max rel. diff "
                + "%.1e, min cosine %.6f", logitErr, got.loss, ref.loss, worstRel, worstCos);
        return new Check(name, ok, detail);
    }

    private static double maxDiff(float[] a, float[] b) {
        double m = 0;
        for (int i = 0; i < a.length; i++) {
            m = Math.max(m, Math.abs((double) a[i] - b[i]));
        }
        return m;
    }

    private static double maxAbs(float[] a) {
        double m = 0;
        for (float v : a) {
            m = Math.max(m, Math.abs(v));
        }
        return m;
    }

    private static double cosine(float[] a, float[] b) {
        double dot = 0;
        double na = 0;
        double nb = 0;
        for (int i = 0; i < a.length; i++) {
            dot += (double) a[i] * b[i];
            na += (double) a[i] * a[i];
            nb += (double) b[i] * b[i];
        }
        return na == 0 && nb == 0 ? 1 : dot / Math.sqrt(na * nb);
    }
}
