package org.djlmegatron.data;

import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Megatron's {@code --split} ({@code "949,50,1"}): train/valid/test fractions of each dataset's
 * sequences, as contiguous ranges in that order ({@code parse_and_normalize_split} and
 * {@code convert_split_vector_to_split_matrix}). Missing trailing parts are 0; a part of 0
 * gives no dataset for that split.
 */
public final class SplitMatrix {

    private static final Pattern NUMBER = Pattern.compile("[.0-9]+");

    private final double[] bookends;
    private final String text;

    private SplitMatrix(double[] bookends, String text) {
        this.bookends = bookends;
        this.text = text;
    }

    /** Parses {@code --split}: up to three non-negative numbers, normalised by their sum. */
    public static SplitMatrix parse(String split) {
        List<Double> parts = new ArrayList<>();
        Matcher m = NUMBER.matcher(split);
        while (m.find()) {
            try {
                parts.add(Double.parseDouble(m.group()));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("--split " + split + ": '" + m.group() + "' is not a number");
            }
        }
        if (parts.isEmpty() || parts.size() > 3) {
            throw new IllegalArgumentException("--split " + split + ": expected 1 to 3 numbers (train,valid,test), found "
                    + parts.size());
        }
        double[] vector = new double[3];
        for (int i = 0; i < parts.size(); i++) {
            vector[i] = parts.get(i);
        }
        double[] normalized = DataBlend.normalize(vector);
        double[] bookends = new double[4];
        for (int i = 0; i < 3; i++) {
            bookends[i + 1] = bookends[i] + normalized[i];
        }
        return new SplitMatrix(bookends, split);
    }

    /** Whether {@code split} gets a dataset (its part is not 0). */
    public boolean has(Split split) {
        int i = split.ordinal();
        return bookends[i + 1] > bookends[i];
    }

    /** First sequence of {@code split} among {@code sequences}: Python's {@code round} (half to even). */
    public int begin(Split split, long sequences) {
        return (int) Math.rint(bookends[split.ordinal()] * (double) sequences);
    }

    /** One past the last sequence of {@code split}. */
    public int end(Split split, long sequences) {
        return (int) Math.rint(bookends[split.ordinal() + 1] * (double) sequences);
    }

    @Override
    public String toString() {
        return text;
    }
}
