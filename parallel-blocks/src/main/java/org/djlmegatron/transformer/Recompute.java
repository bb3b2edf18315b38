package org.djlmegatron.transformer;

import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;

/**
 * Activation recomputation, with Megatron-LM's options and rules.
 * <ul>
 *   <li>{@code FULL}: whole transformer layers are checkpointed; only their inputs are kept.
 *       {@code UNIFORM} checkpoints groups of {@code numLayers} consecutive layers (only each
 *       group's input kept); {@code BLOCK} checkpoints the first {@code numLayers} layers one by
 *       one and keeps the rest.
 *   <li>{@code SELECTIVE}: only the chosen modules inside each layer are recomputed
 *       ({@code core_attn}: softmax(QK^T)V, Megatron's {@code --recompute-activations}).
 * </ul>
 *
 * @param granularity what is recomputed
 * @param method how full recomputation groups layers (null for selective or none)
 * @param numLayers layers per group (uniform) or layers checkpointed (block)
 * @param modules the modules of selective recomputation
 */
public record Recompute(Granularity granularity, Method method, int numLayers, Set<Module> modules) {

    /** What is recomputed. */
    public enum Granularity { NONE, SELECTIVE, FULL }

    /** How full recomputation groups layers. */
    public enum Method { UNIFORM, BLOCK }

    /** Megatron's {@code --recompute-modules}. */
    public enum Module {
        CORE_ATTN, MLP, LAYERNORM, MOE_ACT, MOE;

        /** Megatron's spelling: core_attn, mlp, layernorm, moe_act, moe. */
        public static Module parse(String name) {
            for (Module m : values()) {
                if (m.name().toLowerCase(Locale.ROOT).equals(name)) {
                    return m;
                }
            }
            throw new IllegalArgumentException("--recompute-modules: unknown module '" + name
                    + "' (expected core_attn, mlp, layernorm, moe_act or moe)");
        }
    }

    /** Nothing recomputed. */
    public static final Recompute NONE = new Recompute(Granularity.NONE, null, 0, Set.of());

    public Recompute {
        modules = modules.isEmpty() ? Set.of() : Set.copyOf(EnumSet.copyOf(modules));
        if (granularity == Granularity.FULL) {
            if (method == null) {
                throw new IllegalArgumentException("--recompute-granularity full needs --recompute-method uniform or block");
            }
            if (numLayers < 1) {
                throw new IllegalArgumentException("--recompute-granularity full needs --recompute-num-layers >= 1, found "
                        + numLayers);
            }
        } else if (method != null) {
            throw new IllegalArgumentException("--recompute-method applies to --recompute-granularity full only"
                    + " (found " + granularity.name().toLowerCase(Locale.ROOT) + ")");
        }
        if (granularity == Granularity.SELECTIVE && modules.isEmpty()) {
            throw new IllegalArgumentException("selective recomputation needs at least one --recompute-modules entry");
        }
    }

    /** Selective recomputation of {@code modules}. */
    public static Recompute selective(Set<Module> modules) {
        return new Recompute(Granularity.SELECTIVE, null, 0, modules);
    }

    /** Full recomputation. */
    public static Recompute full(Method method, int numLayers) {
        return new Recompute(Granularity.FULL, method, numLayers, Set.of());
    }

    /** Whether selective recomputation covers {@code m}. */
    public boolean selects(Module m) {
        return granularity == Granularity.SELECTIVE && modules.contains(m);
    }

    /** Layers {@code [start, end)} run as one unit, checkpointed or not. */
    public record LayerGroup(int start, int end, boolean checkpointed) {}

    /** The model's layers in order, grouped as full recomputation checkpoints them (one group otherwise). */
    public List<LayerGroup> groups(int layers) {
        List<LayerGroup> out = new ArrayList<>();
        if (granularity != Granularity.FULL) {
            out.add(new LayerGroup(0, layers, false));
        } else if (method == Method.UNIFORM) {
            for (int l = 0; l < layers; l += numLayers) {
                out.add(new LayerGroup(l, Math.min(layers, l + numLayers), true));
            }
        } else {
            int n = Math.min(numLayers, layers);
            for (int l = 0; l < n; l++) {
                out.add(new LayerGroup(l, l + 1, true));
            }
            if (n < layers) {
                out.add(new LayerGroup(n, layers, false));
            }
        }
        return out;
    }

    @Override
    public String toString() {
        return switch (granularity) {
            case NONE -> "none";
            case SELECTIVE -> "selective " + modules.stream().map(m -> m.name().toLowerCase(Locale.ROOT)).sorted().toList();
            case FULL -> "full, " + method.name().toLowerCase(Locale.ROOT) + ", " + numLayers + " layer(s)";
        };
    }
}
