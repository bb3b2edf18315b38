package org.djlmegatron.cli;

import static org.djlmegatron.options.OptionChecks.positive;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.Callable;
import org.djlmegatron.bridge.LogitsRunner;
import org.djlmegatron.bridge.convert.ReadChecks;
import org.djlmegatron.io.SafetensorsReader;
import org.djlmegatron.io.SafetensorsWriter;
import org.djlmegatron.io.TensorInfo;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code logits}: a checkpoint's forward pass, written as full-vocabulary float32 logits. */
@Command(name = "logits", mixinStandardHelpOptions = true,
        description = "Run the forward pass and write logits [batch, seq, vocab] (float32) as key 'logits'.")
final class LogitsCommand implements Callable<Integer> {

    @Option(names = "--checkpoint", required = true, description = "checkpoint directory: hf, megatron, megatron-dist or djl (detected)")
    Path checkpoint;

    @Option(names = "--model-config", description = "Megatron arguments as JSON, for a Megatron checkpoint without args")
    Path modelConfig;

    @Option(names = "--input-ids", required = true, description = "safetensors file with token ids [batch, seq]")
    Path inputIds;

    @Option(names = "--input-key", defaultValue = "input_ids", description = "tensor name in --input-ids (default: ${DEFAULT-VALUE})")
    String inputKey;

    @Option(names = "--output", required = true, description = "safetensors file to write")
    Path output;

    @Option(names = "--tp", defaultValue = "1", description = "tensor-parallel size (thread ranks, default: ${DEFAULT-VALUE})")
    int tp;

    @Option(names = "--ep", defaultValue = "1", description = "expert-parallel size of an MoE model: TP x EP thread ranks, "
            + "num_experts/EP experts each (default: ${DEFAULT-VALUE})")
    int ep;
    @Option(names = "--pp", defaultValue = "1", description = "pipeline-parallel size: the layers split evenly over PP stages "
            + "(TP x PP x EP thread ranks), each row of the ids one micro-batch of the forward-only schedule "
            + "(default: ${DEFAULT-VALUE})")
    int pp;

    @Option(names = "--sequence-parallel", description = "split activations along the sequence between TP regions")
    boolean sequenceParallel;

    @Option(names = "--no-verify", description = "skip comparing a djl checkpoint's files with their recorded checksums")
    boolean noVerify;

    @Option(names = "--allow-nonfinite", description = "load NaN or infinite weights (refused by default); "
            + "non-finite logits still exit non-zero")
    boolean allowNonFinite;

    @Override
    public Integer call() {
        positive("--tp", tp);
        positive("--pp", pp);
        long[] ids;
        long[] shape;
        try (SafetensorsReader in = SafetensorsReader.open(inputIds)) {
            if (!in.contains(inputKey)) {
                throw new IllegalArgumentException(inputIds + ": no tensor \"" + inputKey + "\" (found: "
                        + String.join(", ", in.keys()) + ")");
            }
            TensorInfo info = in.info(inputKey);
            shape = info.shape();
            if (shape.length != 2) {
                throw new IllegalArgumentException(inputIds + ": \"" + inputKey + "\" must be [batch, seq], found "
                        + java.util.Arrays.toString(shape));
            }
            ids = in.loadLongs(inputKey);
        }
        float[] logits = LogitsRunner.logits(checkpoint, modelConfig, new ReadChecks(!noVerify, allowNonFinite), ids,
                (int) shape[0], tp, ep, pp, sequenceParallel);
        long vocab = logits.length / (shape[0] * shape[1]);
        requireFinite(logits, shape[1], vocab);
        try (NDManager m = NDManager.newBaseManager()) {
            Map<String, NDArray> out = new LinkedHashMap<>();
            out.put("logits", m.create(logits, new Shape(shape[0], shape[1], vocab)).toType(DataType.FLOAT32, false));
            SafetensorsWriter.write(output, out, Map.of("format", "pt"));
        }
        System.out.printf("wrote logits [%d, %d, %d] to %s%n", shape[0], shape[1], vocab, output);
        return 0;
    }

    /** Non-finite logits are a failed run: nothing is written and the command exits non-zero. */
    private void requireFinite(float[] logits, long seq, long vocab) {
        int bad = 0;
        int first = -1;
        for (int i = 0; i < logits.length; i++) {
            if (!Float.isFinite(logits[i])) {
                bad++;
                first = first < 0 ? i : first;
            }
        }
        if (bad > 0) {
            throw new IllegalStateException(checkpoint + ": " + bad + " of " + logits.length + " logits are not finite "
                    + "(first at [" + first / (seq * vocab) + ", " + first / vocab % seq + ", " + first % vocab + "]: "
                    + logits[first] + "); " + output + " not written");
        }
    }
}
