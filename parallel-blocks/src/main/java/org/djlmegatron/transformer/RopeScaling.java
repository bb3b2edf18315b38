package org.djlmegatron.transformer;

/**
 * Scaling of the rotary inverse frequencies for longer contexts: {@code linear} (positions
 * interpolated by {@code factor}: every frequency divided by it) or {@code llama3} (Llama 3.1's
 * wavelength-dependent scaling: frequencies with a wavelength above
 * {@code originalMaxPositionEmbeddings / lowFreqFactor} divided by {@code factor}, those below
 * {@code originalMaxPositionEmbeddings / highFreqFactor} kept, a smooth blend between). Both leave
 * the attention scale at 1. The arithmetic is fp32 in the order transformers' and Megatron-Core's
 * {@code _compute_llama3_parameters} / {@code _apply_scaling} use, so the tables are theirs.
 *
 * @param type the kind of scaling
 * @param factor the context extension factor
 * @param lowFreqFactor llama3 only: wavelengths above original / this are fully scaled
 * @param highFreqFactor llama3 only: wavelengths below original / this are kept
 * @param originalMaxPositionEmbeddings llama3 only: the context the model was pretrained with
 */
public record RopeScaling(Type type, double factor, double lowFreqFactor, double highFreqFactor,
        int originalMaxPositionEmbeddings) {

    /** Megatron-LM's fixed llama3 parameters ({@code --use-rope-scaling} sets only the factor). */
    public static final double MEGATRON_LOW_FREQ_FACTOR = 1;
    public static final double MEGATRON_HIGH_FREQ_FACTOR = 4;
    public static final int MEGATRON_ORIGINAL_MAX_POSITION = 8192;

    /** Scaling kinds, named as Hugging Face's {@code rope_type}. */
    public enum Type {
        LINEAR("linear"),
        LLAMA3("llama3");

        private final String hfName;

        Type(String hfName) {
            this.hfName = hfName;
        }

        /** The {@code rope_type} value. */
        public String hfName() {
            return hfName;
        }
    }

    public RopeScaling {
        if (!(factor > 0)) {
            throw new IllegalArgumentException("rope scaling factor must be positive, found " + factor);
        }
        if (type == Type.LLAMA3 && (!(lowFreqFactor > 0) || !(highFreqFactor > lowFreqFactor)
                || originalMaxPositionEmbeddings < 1)) {
            throw new IllegalArgumentException("llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor and "
                    + "original_max_position_embeddings >= 1, found " + lowFreqFactor + ", " + highFreqFactor + ", "
                    + originalMaxPositionEmbeddings);
        }
    }

    public static RopeScaling linear(double factor) {
        return new RopeScaling(Type.LINEAR, factor, 0, 0, 0);
    }

    public static RopeScaling llama3(double factor, double lowFreqFactor, double highFreqFactor, int originalMax) {
        return new RopeScaling(Type.LLAMA3, factor, lowFreqFactor, highFreqFactor, originalMax);
    }

    /** Megatron-LM's {@code --use-rope-scaling --rope-scaling-factor F}. */
    public static RopeScaling megatronLlama3(double factor) {
        return llama3(factor, MEGATRON_LOW_FREQ_FACTOR, MEGATRON_HIGH_FREQ_FACTOR, MEGATRON_ORIGINAL_MAX_POSITION);
    }

    /** Whether Megatron-LM's llama3 arguments (only the factor) express this scaling. */
    public boolean isMegatronLlama3() {
        return type == Type.LLAMA3 && lowFreqFactor == MEGATRON_LOW_FREQ_FACTOR
                && highFreqFactor == MEGATRON_HIGH_FREQ_FACTOR
                && originalMaxPositionEmbeddings == MEGATRON_ORIGINAL_MAX_POSITION;
    }

    /** The scaled inverse frequencies (fp32, as the references compute them). */
    public float[] apply(float[] invFreq) {
        float f = (float) factor;
        float[] out = new float[invFreq.length];
        if (type == Type.LINEAR) {
            for (int i = 0; i < out.length; i++) {
                out[i] = invFreq[i] / f;
            }
            return out;
        }
        float low = (float) lowFreqFactor;
        float high = (float) highFreqFactor;
        double lowWavelen = originalMaxPositionEmbeddings / lowFreqFactor;
        double highWavelen = originalMaxPositionEmbeddings / highFreqFactor;
        float twoPi = (float) (2 * Math.PI);
        for (int i = 0; i < out.length; i++) {
            float wavelen = twoPi / invFreq[i];
            if (wavelen > lowWavelen) {
                out[i] = invFreq[i] / f;
            } else if (wavelen < highWavelen) {
                out[i] = invFreq[i];
            } else {
                float smooth = ((float) originalMaxPositionEmbeddings / wavelen - low) / (high - low);
                out[i] = (1 - smooth) * invFreq[i] / f + smooth * invFreq[i];
            }
        }
        return out;
    }
}
