package org.djlmegatron.transformer;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.Shape;

/**
 * Keys and values of every layer for incremental decoding, this rank's key/value heads only
 * (heads are split over tensor parallelism as in training). Each layer's arrays hold
 * {@code capacity} positions, {@code [batch, capacity, localGroups, 1, headDim]}, allocated on the
 * first step in the layer's compute dtype and filled in place; {@link #length()} positions are valid. Every row of the batch shares the same
 * positions (prompts of different lengths are fed as Megatron does: see the generator).
 */
public final class KvCache implements AutoCloseable {

    private final NDManager manager;
    private final NDArray[] keys;
    private final NDArray[] values;
    private final long batch;
    private final long capacity;
    private final Shape shape;
    private long length;

    /**
     * @param manager where the cache lives (a sub-manager is made and closed with the cache)
     * @param cfg the model's configuration
     * @param tpSize tensor-parallel size: this rank holds {@code numQueryGroups / tpSize} heads
     */
    public KvCache(NDManager manager, TransformerConfig cfg, int tpSize, long batch, long capacity) {
        if (batch < 1 || capacity < 1) {
            throw new IllegalArgumentException("KV cache: batch " + batch + " and capacity " + capacity
                    + " must be positive");
        }
        this.manager = manager.newSubManager();
        this.batch = batch;
        this.capacity = capacity;
        keys = new NDArray[cfg.numLayers()];
        values = new NDArray[cfg.numLayers()];
        shape = new Shape(batch, capacity, cfg.numQueryGroups() / tpSize, 1, cfg.kvChannels());
    }

    /** Valid positions: the next token fed is at position {@code length()}. */
    public long length() {
        return length;
    }

    public long capacity() {
        return capacity;
    }

    public long batch() {
        return batch;
    }

    /** Forgets every position (the arrays are reused). */
    public void reset() {
        length = 0;
    }

    /** Marks {@code steps} more positions valid, after every layer has {@link #append appended}. */
    public void advance(long steps) {
        length += steps;
    }

    /**
     * Writes layer {@code layer}'s keys and values {@code [batch, s, g, 1, d]} at positions
     * {@code length() .. length()+s-1} and returns {keys, values} of positions {@code 0 ..
     * length()+s-1}, as temporaries of {@code k}'s manager.
     */
    NDArray[] append(int layer, NDArray k, NDArray v) {
        long end = length + k.getShape().get(1);
        if (keys[layer] == null) { // allocated on first use, in the dtype the layer computes in
            keys[layer] = manager.zeros(shape, k.getDataType());
            values[layer] = manager.zeros(shape, k.getDataType());
        }
        NDIndex written = new NDIndex(":, {}:{}", length, end);
        keys[layer].set(written, k);
        values[layer].set(written, v);
        NDIndex valid = new NDIndex(":, :{}", end);
        NDArray kAll = keys[layer].get(valid);
        NDArray vAll = values[layer].get(valid);
        kAll.attach(k.getManager()); // a view of this step, not of the cache
        vAll.attach(k.getManager());
        return new NDArray[] {kAll, vAll};
    }

    @Override
    public void close() {
        manager.close();
    }
}
