package org.djlmegatron.bridge.convert;

import java.util.List;
import java.util.Map;
import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * What a {@link WeightSink} is about to receive, known before the first byte is written so that
 * formats with a header up front (a pickle, a safetensors header) can write it first.
 *
 * @param config the model
 * @param params every parameter, in the order they will arrive
 * @param dtypes each parameter's element type on disk, by name
 * @param layout the parallel split to write
 * @param iteration the training iteration (0: a release)
 */
public record SinkPlan(TransformerConfig config, List<ParamSpec> params, Map<String, SafetensorsDType> dtypes,
        ParallelLayout layout, long iteration) {

    public SinkPlan {
        params = List.copyOf(params);
        dtypes = Map.copyOf(dtypes);
    }

    public SafetensorsDType dtype(ParamSpec spec) {
        return dtypes.get(spec.name());
    }

    /** The element type most parameters have (what {@code args.params_dtype} records). */
    public SafetensorsDType mainDtype() {
        return dtypes.get(params.get(0).name());
    }
}
