package org.djlmegatron.bridge.convert;

import java.nio.ByteBuffer;
import org.djlmegatron.io.SafetensorsDType;

/**
 * What a checkpoint read verifies: the files' recorded checksums ({@code --no-verify} skips them,
 * for speed) and that every floating-point weight is finite ({@code --allow-nonfinite} lets NaN
 * and infinity through, to inspect a diverged run).
 *
 * @param verifyChecksums compare each file with the checksum its metadata records
 * @param allowNonFinite accept NaN and infinite weights
 */
public record ReadChecks(boolean verifyChecksums, boolean allowNonFinite) {

    /** Everything checked: the default of every command. */
    public static final ReadChecks ALL = new ReadChecks(true, false);

    /** Refuses {@code values} of tensor {@code tensor} read from {@code file} if any is NaN or infinite. */
    public void requireFinite(String file, String tensor, float[] values) {
        if (allowNonFinite) {
            return;
        }
        int bad = 0;
        int first = -1;
        for (int i = 0; i < values.length; i++) {
            if (!Float.isFinite(values[i])) {
                bad++;
                first = first < 0 ? i : first;
            }
        }
        if (bad > 0) {
            throw new NonFiniteWeightsException(file, tensor, bad, values.length, first, values[first]);
        }
    }

    /** As {@link #requireFinite(String, String, float[])} for a host tensor (integer tensors pass). */
    public void requireFinite(String file, String tensor, HostTensor t) {
        if (allowNonFinite) {
            return;
        }
        SafetensorsDType d = t.dtype();
        if (d == SafetensorsDType.F32) {
            ByteBuffer b = t.buffer();
            float[] values = new float[(int) t.numel()];
            b.asFloatBuffer().get(values);
            requireFinite(file, tensor, values);
        } else if (d == SafetensorsDType.F16 || d == SafetensorsDType.BF16 || d == SafetensorsDType.F64) {
            requireFinite(file, tensor, t.toFloats());
        }
    }
}
