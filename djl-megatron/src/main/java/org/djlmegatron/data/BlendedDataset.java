package org.djlmegatron.data;

import java.util.List;
import java.util.TreeSet;

/**
 * Megatron's {@code BlendedDataset}: samples drawn from several datasets in proportion to their
 * weights, deterministically. Sample {@code i} comes from the dataset whose share so far lags its
 * weight the most ({@code build_blending_indices} in helpers.cpp); each dataset is read in its
 * own (already shuffled) order.
 *
 * <p>Without a size, every sample of every dataset is used once, interleaved in proportion to
 * the dataset sizes ({@code build_exhaustive_blending_indices}).
 */
public final class BlendedDataset implements SampleDataset {

    private final List<SampleDataset> datasets;
    private final double[] weights;
    private final short[] datasetIndex;
    private final int[] datasetSampleIndex;

    private BlendedDataset(List<SampleDataset> datasets, double[] weights, short[] datasetIndex,
            int[] datasetSampleIndex) {
        this.datasets = datasets;
        this.weights = weights;
        this.datasetIndex = datasetIndex;
        this.datasetSampleIndex = datasetSampleIndex;
    }

    /**
     * Blends {@code size} samples; {@code weights} are normalised again here, as Megatron does
     * (its results depend on that second rounding).
     *
     * @throws InvalidDataException if a dataset has fewer samples than the blend takes from it
     */
    public static BlendedDataset of(List<? extends SampleDataset> datasets, double[] weights, int size) {
        List<SampleDataset> ds = checkDatasets(datasets);
        if (weights.length != ds.size()) {
            throw new IllegalArgumentException(weights.length + " weights for " + ds.size() + " datasets");
        }
        double[] w = DataBlend.normalize(weights);
        short[] datasetIndex = new short[size];
        int[] datasetSampleIndex = new int[size];
        int[] taken = new int[ds.size()];
        for (int s = 0; s < size; s++) {
            double position = Math.max((double) s, 1.0);
            int best = 0;
            double bestError = w[0] * position - taken[0];
            for (int d = 1; d < ds.size(); d++) {
                double error = w[d] * position - taken[d];
                if (error > bestError) {
                    bestError = error;
                    best = d;
                }
            }
            datasetIndex[s] = (short) best;
            datasetSampleIndex[s] = taken[best]++;
        }
        checkTaken(ds, taken);
        return new BlendedDataset(ds, w, datasetIndex, datasetSampleIndex);
    }

    /** Every sample of every dataset once, interleaved in proportion to the dataset sizes. */
    public static BlendedDataset exhaustive(List<? extends SampleDataset> datasets) {
        List<SampleDataset> ds = checkDatasets(datasets);
        long total = 0;
        for (SampleDataset d : ds) {
            total += d.size();
        }
        if (total > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException(total + " samples exceed a Java array");
        }
        double[] w = new double[ds.size()];
        TreeSet<Integer> unspent = new TreeSet<>();
        for (int d = 0; d < ds.size(); d++) {
            w[d] = ds.get(d).size() / (double) total;
            if (ds.get(d).size() > 0) {
                unspent.add(d);
            }
        }
        short[] datasetIndex = new short[(int) total];
        int[] datasetSampleIndex = new int[(int) total];
        int[] taken = new int[ds.size()];
        for (int s = 0; !unspent.isEmpty(); s++) {
            double position = Math.max((double) s, 1.0);
            int best = -1;
            double bestError = -Double.MAX_VALUE;
            for (int d : unspent) {
                double error = w[d] * position - taken[d];
                if (error > bestError) {
                    bestError = error;
                    best = d;
                }
            }
            datasetIndex[s] = (short) best;
            datasetSampleIndex[s] = taken[best]++;
            if (taken[best] == ds.get(best).size()) {
                unspent.remove(best);
            }
        }
        return new BlendedDataset(ds, w, datasetIndex, datasetSampleIndex);
    }

    @Override
    public int size() {
        return datasetIndex.length;
    }

    @Override
    public int sequenceLength() {
        return datasets.get(0).sequenceLength();
    }

    @Override
    public long[] sample(int index) {
        return datasets.get(datasetIndex[index]).sample(datasetSampleIndex[index]);
    }

    /** Which dataset sample {@code index} comes from. */
    public int datasetOf(int index) {
        return datasetIndex[index];
    }

    public List<SampleDataset> datasets() {
        return datasets;
    }

    /** The normalised weights actually used. */
    public double[] weights() {
        return weights.clone();
    }

    private static List<SampleDataset> checkDatasets(List<? extends SampleDataset> datasets) {
        if (datasets.isEmpty() || datasets.size() > Short.MAX_VALUE) {
            throw new IllegalArgumentException("a blend needs 1 to " + Short.MAX_VALUE + " datasets, found "
                    + datasets.size());
        }
        int seq = datasets.get(0).sequenceLength();
        for (SampleDataset d : datasets) {
            if (d.sequenceLength() != seq) {
                throw new IllegalArgumentException("blended datasets differ in sequence length: " + seq + " and "
                        + d.sequenceLength());
            }
        }
        return List.copyOf(datasets);
    }

    private static void checkTaken(List<SampleDataset> ds, int[] taken) {
        for (int d = 0; d < ds.size(); d++) {
            if (taken[d] > ds.get(d).size()) {
                throw new InvalidDataException("blend takes " + taken[d] + " samples from dataset " + d + " ("
                        + ds.get(d) + ") which has " + ds.get(d).size());
            }
        }
    }
}
