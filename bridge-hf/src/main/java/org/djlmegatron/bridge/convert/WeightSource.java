package org.djlmegatron.bridge.convert;

import org.djlmegatron.io.SafetensorsDType;
import org.djlmegatron.transformer.TransformerConfig;

/**
 * A checkpoint opened for reading, seen as the model it holds: its config and, for every
 * {@link ParamSpec} of {@link ModelParams#of}, the full tensor in Megatron-Core layout (q/k/v
 * grouped, gate/up stacked), assembled from whatever shards the format stores. Reads are
 * thread-safe; each returns a fresh tensor.
 */
public interface WeightSource extends AutoCloseable {

    /** The model's shape. */
    TransformerConfig config();

    /** The training iteration the checkpoint was saved at; 0 when it has none (a release). */
    long iteration();

    /** The element type {@code spec} is stored in (known without reading its data). */
    SafetensorsDType dtype(ParamSpec spec);

    /** The full tensor of {@code spec}, checked against the spec's shape. */
    HostTensor read(ParamSpec spec);

    /** The checkpoint's location, for messages. */
    String describe();

    @Override
    void close();
}
