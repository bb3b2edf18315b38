package org.djlmegatron.bridge.convert;

import java.util.Arrays;
import java.util.Objects;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.djlmegatron.nn.ShardLayout;

/**
 * One parameter of the model in the form every converter passes around: its Megatron-Core
 * state-dict name with global layer and expert numbers, its full (unsharded) shape, and how
 * tensor parallelism splits it.
 *
 * @param name e.g. {@code decoder.layers.3.mlp.experts.local_experts.1.linear_fc1.weight}
 * @param shape the full shape (copied)
 * @param layout the tensor-parallel split
 */
public record ParamSpec(String name, long[] shape, ShardLayout layout) {

    private static final Pattern LAYER = Pattern.compile("decoder\\.layers\\.(\\d+)\\.(.+)");
    private static final Pattern EXPERT = Pattern.compile("mlp\\.experts\\.local_experts\\.(\\d+)\\.(.+)");

    public ParamSpec {
        Objects.requireNonNull(name, "name");
        shape = shape.clone();
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }

    /** The decoder layer this belongs to, or -1 (embeddings, final norm, output layer). */
    public int layer() {
        return layerOf(name);
    }

    /** The MoE expert this belongs to, or -1. */
    public int expert() {
        return expertOf(name);
    }

    /** The decoder layer of a Megatron-Core name, or -1. */
    public static int layerOf(String name) {
        Matcher m = LAYER.matcher(name);
        return m.matches() ? Integer.parseInt(m.group(1)) : -1;
    }

    /** The expert of a Megatron-Core name, or -1. */
    public static int expertOf(String name) {
        Matcher m = LAYER.matcher(name);
        if (!m.matches()) {
            return -1;
        }
        Matcher e = EXPERT.matcher(m.group(2));
        return e.matches() ? Integer.parseInt(e.group(1)) : -1;
    }

    /** What follows {@code decoder.layers.N.} in a layer parameter's name, or null. */
    public static String layerPart(String name) {
        Matcher m = LAYER.matcher(name);
        return m.matches() ? m.group(2) : null;
    }

    /** What follows {@code mlp.experts.local_experts.E.} in an expert parameter's name, or null. */
    public static String expertPart(String name) {
        String rest = layerPart(name);
        Matcher e = rest == null ? null : EXPERT.matcher(rest);
        return e != null && e.matches() ? e.group(2) : null;
    }

    /**
     * {@code name} with its layer number replaced by {@code layer} and its expert number by
     * {@code expert} (where it has them): how per-stage and per-expert-rank files renumber.
     */
    public static String renumber(String name, int layer, int expert) {
        Matcher m = LAYER.matcher(name);
        if (!m.matches()) {
            return name;
        }
        String rest = m.group(2);
        Matcher e = EXPERT.matcher(rest);
        if (e.matches()) {
            rest = "mlp.experts.local_experts." + expert + "." + e.group(2);
        }
        return "decoder.layers." + layer + "." + rest;
    }

    /** Elements in the full tensor. */
    public long numel() {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return n;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof ParamSpec p && name.equals(p.name) && Arrays.equals(shape, p.shape) && layout == p.layout;
    }

    @Override
    public int hashCode() {
        return name.hashCode();
    }

    @Override
    public String toString() {
        return name + " " + Arrays.toString(shape) + " " + layout;
    }
}
