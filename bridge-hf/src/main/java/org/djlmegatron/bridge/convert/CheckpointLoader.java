package org.djlmegatron.bridge.convert;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.Shape;
import java.util.HashMap;
import java.util.Map;
import org.djlmegatron.models.GPTModel;
import org.djlmegatron.nn.ShardedParameter;

/**
 * Fills a {@link GPTModel} from any {@link WeightSource}: each rank reads every full tensor and
 * keeps its own shard (as float32, the model's type). Safe to call from every rank thread at once.
 */
public final class CheckpointLoader {

    private CheckpointLoader() {}

    public static void loadInto(WeightSource source, GPTModel model) {
        loadInto(source, model, ReadChecks.ALL);
    }

    /** As {@link #loadInto(WeightSource, GPTModel)}, refusing non-finite weights unless {@code checks} allows them. */
    public static void loadInto(WeightSource source, GPTModel model, ReadChecks checks) {
        Map<String, ParamSpec> specs = new HashMap<>();
        ModelParams.of(model.config()).forEach(s -> specs.put(s.name(), s));
        for (ShardedParameter p : model.parameters()) {
            ParamSpec spec = specs.get(p.name());
            if (spec == null) {
                throw new CheckpointException(source.describe() + ": the model has a parameter " + p.name()
                        + " that the checkpoint layout does not know");
            }
            HostTensor shard = TpSharding.shard(source.read(spec), p.layout(), p.tpRank(), p.tpSize());
            float[] values = shard.toFloats();
            checks.requireFinite(source.describe(), spec.name(), values);
            try (NDArray javaBacked = model.rankContext().manager().create(values, new Shape(shard.shape()))) {
                model.installShard(p, javaBacked.duplicate()); // libtorch-owned, in the model's dtype
            }
        }
    }
}
