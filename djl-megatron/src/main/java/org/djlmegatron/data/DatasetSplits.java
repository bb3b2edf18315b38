package org.djlmegatron.data;

import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * The train, valid and test datasets of {@code --data-path} and {@code --split}, built as
 * Megatron's {@code BlendedMegatronDatasetBuilder} builds them: what {@code pretrain-gpt} feeds
 * the trainer.
 *
 * <ul>
 *   <li>one prefix without a weight: a {@link GPTDataset} per split, of the requested size;
 *   <li>weighted prefixes: per prefix and split a {@link GPTDataset} of
 *       {@code ceil(ceil(size * weight) * 1.005)} samples (Megatron's 0.5% surplus), blended
 *       into {@code sum(ceil(size * weight))} samples;
 *   <li>several prefixes without weights: one epoch of each, blended by their sizes into
 *       {@code min(size, total)} samples, or all of them when the size is null.
 * </ul>
 * Each prefix is split on its own sequences with the same fractions.
 *
 * @param train the training samples, if the split gives any
 * @param valid the validation samples, if any
 * @param test the test samples, if any
 * @param opened every indexed dataset opened, for closing
 */
public record DatasetSplits(Optional<SampleDataset> train, Optional<SampleDataset> valid,
        Optional<SampleDataset> test, List<IndexedDataset> opened) implements AutoCloseable {

    /** Megatron's default {@code --mid-level-dataset-surplus}. */
    public static final double MID_LEVEL_SURPLUS = 0.005;

    /** The dataset of {@code split}, if it has one. */
    public Optional<SampleDataset> get(Split split) {
        return switch (split) {
            case TRAIN -> train;
            case VALID -> valid;
            case TEST -> test;
        };
    }

    /**
     * Builds the splits.
     *
     * @param sizes samples per split in {@link Split} order; an entry may be null (one epoch, or
     *     every sample of an unweighted blend) except for weighted blends
     */
    public static DatasetSplits build(DataBlend blend, SplitMatrix split, Integer[] sizes, GPTDatasetConfig config) {
        if (sizes.length != 3) {
            throw new IllegalArgumentException("sizes must have 3 entries (train, valid, test), found " + sizes.length);
        }
        List<IndexedDataset> opened = new ArrayList<>();
        try {
            for (var prefix : blend.prefixes()) {
                opened.add(IndexedDataset.open(prefix));
            }
            Map<Split, SampleDataset> out = new EnumMap<>(Split.class);
            double[] weights = blend.weights();
            for (Split s : Split.values()) {
                if (!split.has(s)) {
                    continue;
                }
                Integer size = sizes[s.ordinal()];
                if (opened.size() == 1 && weights == null) {
                    out.put(s, gpt(opened.get(0), s, split, size, config));
                } else if (weights != null) {
                    if (size == null) {
                        throw new IllegalArgumentException("a weighted --data-path needs a sample count for the "
                                + s.label() + " split");
                    }
                    List<SampleDataset> parts = new ArrayList<>();
                    int total = 0;
                    for (int d = 0; d < opened.size(); d++) {
                        int target = (int) Math.ceil(size * weights[d]);
                        int buffered = (int) Math.ceil(Math.ceil(size * weights[d]) * (1 + MID_LEVEL_SURPLUS));
                        parts.add(gpt(opened.get(d), s, split, buffered, config));
                        total += target;
                    }
                    out.put(s, BlendedDataset.of(parts, weights, total));
                } else {
                    List<SampleDataset> parts = new ArrayList<>();
                    double[] lengths = new double[opened.size()];
                    long available = 0;
                    for (int d = 0; d < opened.size(); d++) {
                        parts.add(gpt(opened.get(d), s, split, null, config));
                        lengths[d] = parts.get(d).size();
                        available += parts.get(d).size();
                    }
                    out.put(s, size == null ? BlendedDataset.exhaustive(parts)
                            : BlendedDataset.of(parts, lengths, (int) Math.min(size, available)));
                }
            }
            return new DatasetSplits(Optional.ofNullable(out.get(Split.TRAIN)), Optional.ofNullable(out.get(Split.VALID)),
                    Optional.ofNullable(out.get(Split.TEST)), List.copyOf(opened));
        } catch (RuntimeException e) {
            opened.forEach(IndexedDataset::close);
            throw e;
        }
    }

    private static GPTDataset gpt(IndexedDataset data, Split s, SplitMatrix split, Integer size, GPTDatasetConfig config) {
        long n = data.sequenceCount();
        if (n > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(data.prefix() + ": " + n + " sequences exceed a Java array");
        }
        return GPTDataset.build(data, s, split.begin(s, n), split.end(s, n), size, config);
    }

    @Override
    public void close() {
        opened.forEach(IndexedDataset::close);
    }
}
