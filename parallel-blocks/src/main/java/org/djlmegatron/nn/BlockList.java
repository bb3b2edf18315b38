package org.djlmegatron.nn;

import ai.djl.ndarray.NDArray;
import org.djlmegatron.parallel.RankContext;

/**
 * Numbered children ({@code 0, 1, ...}), as Megatron names {@code layers.N} and
 * {@code local_experts.E}. The owner applies them; the list only names them.
 */
public final class BlockList<B extends ParallelBlock> extends ParallelBlock {

    private int count;

    public BlockList(RankContext ctx) {
        this(ctx, 0);
    }

    /** Numbers children from {@code first} (a rank's local experts keep their global numbers). */
    public BlockList(RankContext ctx, int first) {
        super(ctx);
        count = first;
    }

    /** Appends a block under the next index and returns it. */
    public B add(B block) {
        return part(Integer.toString(count++), block);
    }

    /**
     * Adds a block under a given index (a pipeline stage numbers its layers globally, so each
     * parameter keeps the name, and so the initial value, it has in the whole model).
     */
    public B add(int index, B block) {
        count = index + 1;
        return part(Integer.toString(index), block);
    }

    @Override
    public NDArray apply(NDArray x) {
        throw new UnsupportedOperationException("a BlockList is applied by its owner");
    }
}
