package org.djlmegatron.training.buffers;

import ai.djl.ndarray.NDArray;
import ai.djl.nn.Parameter;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import org.djlmegatron.training.model.TrainableParameter;

/**
 * Where each parameter of a {@link ParamAndGradBuffer} lies: its element range, and the parameter
 * a tape reports ({@code Tape.noteUse} takes DJL {@link Parameter}s or arrays) mapped to its index.
 */
final class BucketOffsets {

    private final long[] offsets;
    private final Map<NDArray, Integer> index = new IdentityHashMap<>();

    BucketOffsets(List<TrainableParameter> params) {
        offsets = new long[params.size() + 1]; // the buffer's layout: model order, back to back
        for (int i = 0; i < params.size(); i++) {
            offsets[i + 1] = offsets[i] + params.get(i).array().getShape().size();
            index.put(params.get(i).array(), i);
        }
    }

    int count() {
        return offsets.length - 1;
    }

    long start(int param) {
        return offsets[param];
    }

    long end(int param) {
        return offsets[param + 1];
    }

    /** The index of a parameter as a tape reports it, or -1 when it is not in the buffer. */
    int indexOf(Object reported) {
        NDArray a = reported instanceof Parameter p ? (p.isInitialized() ? p.getArray() : null)
                : reported instanceof NDArray x ? x : null;
        Integer i = a == null ? null : index.get(a);
        return i == null ? -1 : i;
    }
}
