package org.djlmegatron.io.torch;

import java.util.Arrays;
import java.util.List;

/**
 * A {@code torch.Size}: a tensor shape or, in distributed checkpoints, an offset.
 *
 * @param dims the dimensions, immutable
 */
public record TorchSize(List<Long> dims) {

    public TorchSize {
        dims = List.copyOf(dims);
    }

    public static TorchSize of(long... dims) {
        return new TorchSize(Arrays.stream(dims).boxed().toList());
    }

    public long[] toArray() {
        return dims.stream().mapToLong(Long::longValue).toArray();
    }
}
