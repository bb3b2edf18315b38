package org.djlmegatron.pretrain;

import java.util.EnumSet;
import java.util.List;
import java.util.Locale;
import org.djlmegatron.transformer.Recompute;
import picocli.CommandLine.Option;

/** {@code pretrain-gpt}'s dropout and activation-recomputation options, Megatron-LM's names and rules. */
public final class ActivationOptions {

    /** Megatron's default dropout for models built from flags. */
    public static final double MEGATRON_DROPOUT = 0.1;

    @Option(names = "--hidden-dropout", description = "dropout after the embeddings and on each attention and MLP output; "
            + "default 0.1 (Megatron's), or the Hugging Face config's with --init-hf")
    public Double hiddenDropout;
    @Option(names = "--attention-dropout", description = "dropout on the attention probabilities; default 0.1 "
            + "(Megatron's), or the Hugging Face config's with --init-hf")
    public Double attentionDropout;

    @Option(names = "--recompute-activations", description = "selective recomputation of the core attention "
            + "(same as --recompute-granularity selective)")
    public boolean recomputeActivations;
    @Option(names = "--recompute-granularity", description = "full (whole layers) or selective (--recompute-modules); default: none")
    public String recomputeGranularity;
    @Option(names = "--recompute-method", description = "with full: uniform (groups of --recompute-num-layers layers) "
            + "or block (the first --recompute-num-layers layers, one by one)")
    public String recomputeMethod;
    @Option(names = "--recompute-num-layers", description = "layers per group (uniform) or layers recomputed (block)")
    public Integer recomputeNumLayers;
    @Option(names = "--recompute-modules", arity = "1..*", split = ",", description = "with selective: any of core_attn, "
            + "mlp, layernorm, moe_act, moe (default: core_attn)")
    public List<String> recomputeModules;

    /** The dropout probabilities: a flag given wins, then the HF config's (with --init-hf), then Megatron's 0.1. */
    public double[] dropout(double[] fromHf) {
        double hidden = hiddenDropout != null ? hiddenDropout : fromHf != null ? fromHf[0] : MEGATRON_DROPOUT;
        double attention = attentionDropout != null ? attentionDropout : fromHf != null ? fromHf[1] : MEGATRON_DROPOUT;
        check("--hidden-dropout", hidden);
        check("--attention-dropout", attention);
        return new double[] {hidden, attention};
    }

    private static void check(String flag, double p) {
        if (!(p >= 0 && p < 1)) {
            throw new IllegalArgumentException(flag + " must be in [0, 1), found " + p);
        }
    }

    /** The recomputation the flags ask for, with Megatron's argument checks. */
    public Recompute recompute() {
        String granularity = recomputeGranularity != null ? recomputeGranularity.toLowerCase(Locale.ROOT)
                : recomputeActivations ? "selective" : null;
        if (recomputeActivations && !"selective".equals(granularity)) {
            throw new IllegalArgumentException("--recompute-activations is selective recomputation; it cannot be combined "
                    + "with --recompute-granularity " + recomputeGranularity);
        }
        Recompute.Method method = recomputeMethod == null ? null : switch (recomputeMethod.toLowerCase(Locale.ROOT)) {
            case "uniform" -> Recompute.Method.UNIFORM;
            case "block" -> Recompute.Method.BLOCK;
            default -> throw new IllegalArgumentException("--recompute-method must be uniform or block, found " + recomputeMethod);
        };
        if (granularity == null) {
            if (method != null || recomputeNumLayers != null || recomputeModules != null) {
                throw new IllegalArgumentException("--recompute-method, --recompute-num-layers and --recompute-modules need "
                        + "--recompute-granularity (or --recompute-activations)");
            }
            return Recompute.NONE;
        }
        return switch (granularity) {
            case "full" -> {
                if (recomputeModules != null) {
                    throw new IllegalArgumentException("--recompute-modules applies to --recompute-granularity selective");
                }
                yield new Recompute(Recompute.Granularity.FULL, method,
                        recomputeNumLayers != null ? recomputeNumLayers : 0, java.util.Set.of());
            }
            case "selective" -> {
                if (recomputeNumLayers != null) {
                    throw new IllegalArgumentException("--recompute-num-layers applies to --recompute-granularity full");
                }
                EnumSet<Recompute.Module> modules = EnumSet.noneOf(Recompute.Module.class);
                for (String m : recomputeModules != null ? recomputeModules : List.of("core_attn")) {
                    modules.add(Recompute.Module.parse(m.toLowerCase(Locale.ROOT)));
                }
                yield new Recompute(Recompute.Granularity.SELECTIVE, method, 0, modules);
            }
            default -> throw new IllegalArgumentException("--recompute-granularity must be full or selective, found "
                    + recomputeGranularity);
        };
    }
}
