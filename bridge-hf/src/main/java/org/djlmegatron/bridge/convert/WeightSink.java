package org.djlmegatron.bridge.convert;

/**
 * A checkpoint being written into a (temporary) directory: it receives every parameter of the
 * model once, as a full tensor in Megatron-Core layout, and lays it out in its format (sharding,
 * renaming, splitting q/k/v). {@link #finish} completes the files; the caller moves the directory
 * into place.
 */
public interface WeightSink extends AutoCloseable {

    /** Writes one parameter; every {@link ParamSpec} of the model arrives exactly once. */
    void put(ParamSpec spec, HostTensor full);

    /** Completes and syncs every file (index, metadata, tracker last). */
    void finish();

    /** Releases open files; after a failure the caller deletes the directory. */
    @Override
    void close();
}
