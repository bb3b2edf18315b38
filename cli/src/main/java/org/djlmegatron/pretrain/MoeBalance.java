package org.djlmegatron.pretrain;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import java.util.List;
import java.util.Locale;
import org.djlmegatron.comm.ProcessGroup;
import org.djlmegatron.comm.ReduceOp;
import org.djlmegatron.moe.MoeStats;

/**
 * One iteration's MoE balance figures over the whole global batch: rows routed to each expert of
 * each MoE layer, and the load-balancing and z losses (without their coefficients) averaged over
 * the layers and the data-parallel ranks (NaN when off), as Megatron's tracker reports them.
 *
 * @param tokensPerExpert [layer][expert]
 * @param dispatchSeconds this rank's time in the expert-parallel exchange, all layers (0 at EP = 1)
 */
record MoeBalance(long[][] tokensPerExpert, double auxLoss, double zLoss, double dispatchSeconds) {

    /** Collects and resets every layer's figures; every data-parallel rank calls it (two small all-reduces). */
    static MoeBalance collect(List<MoeStats> layers, ProcessGroup dp, NDManager manager) {
        int n = layers.size();
        int experts = layers.get(0).tokensPerExpert().length;
        float[] counts = new float[n * experts];
        double aux = 0;
        double z = 0;
        double dispatch = 0;
        for (int l = 0; l < n; l++) {
            long[] c = layers.get(l).tokensPerExpert();
            for (int e = 0; e < experts; e++) {
                counts[l * experts + e] = c[e];
            }
            aux += layers.get(l).auxLoss() / n;
            z += layers.get(l).zLoss() / n;
            dispatch += layers.get(l).dispatchSeconds();
            layers.get(l).reset();
        }
        long[][] total = new long[n][experts];
        try (NDManager m = manager.newSubManager()) {
            NDArray c = m.create(counts, new Shape(n * experts));
            NDArray losses = m.create(new float[] {(float) aux, (float) z});
            float[] summed = dp.size() > 1 ? dp.allReduce(c, ReduceOp.SUM).toFloatArray() : counts;
            float[] mean = dp.size() > 1 ? dp.allReduce(losses, ReduceOp.AVG).toFloatArray() : losses.toFloatArray();
            for (int l = 0; l < n; l++) {
                for (int e = 0; e < experts; e++) {
                    total[l][e] = (long) summed[l * experts + e];
                }
            }
            return new MoeBalance(total, mean[0], mean[1], dispatch);
        }
    }

    /** Highest expert load over the mean load, worst layer (1.0: perfectly balanced). */
    double maxOverMean() {
        double worst = 0;
        for (long[] layer : tokensPerExpert) {
            long max = 0;
            long sum = 0;
            for (long c : layer) {
                max = Math.max(max, c);
                sum += c;
            }
            worst = Math.max(worst, sum == 0 ? 0 : max * (double) layer.length / sum);
        }
        return worst;
    }

    /** The log line's part: losses, worst balance, each layer's tokens per expert. */
    String logText() {
        StringBuilder b = new StringBuilder();
        if (!Double.isNaN(auxLoss)) {
            b.append(String.format(Locale.ROOT, " load_balancing_loss: %.6E |", auxLoss));
        }
        if (!Double.isNaN(zLoss)) {
            b.append(String.format(Locale.ROOT, " z_loss: %.6E |", zLoss));
        }
        b.append(String.format(Locale.ROOT, " expert load max/mean: %.3f | tokens per expert:", maxOverMean()));
        for (int l = 0; l < tokensPerExpert.length; l++) {
            b.append(l == 0 ? " " : " / ");
            for (int e = 0; e < tokensPerExpert[l].length; e++) {
                b.append(e == 0 ? "" : ",").append(tokensPerExpert[l][e]);
            }
        }
        return b.append(" |").toString();
    }

    /** Adds {@code moe_load_balancing_loss}, {@code moe_z_loss}, {@code moe_tokens_per_expert} to a metrics line. */
    void addTo(JsonObject o) {
        if (!Double.isNaN(auxLoss)) {
            o.addProperty("moe_load_balancing_loss", auxLoss);
        }
        if (!Double.isNaN(zLoss)) {
            o.addProperty("moe_z_loss", zLoss);
        }
        o.addProperty("moe_max_over_mean_load", maxOverMean());
        o.addProperty("moe_dispatch_ms", dispatchSeconds * 1e3);
        JsonArray layers = new JsonArray();
        for (long[] layer : tokensPerExpert) {
            JsonArray a = new JsonArray();
            for (long c : layer) {
                a.add(c);
            }
            layers.add(a);
        }
        o.add("moe_tokens_per_expert", layers);
    }
}
