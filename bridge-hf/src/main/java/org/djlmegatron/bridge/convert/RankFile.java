package org.djlmegatron.bridge.convert;

import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * One model-parallel rank's file set, named as Megatron names them: {@code mp_rank_TT}, with
 * {@code _PPP} when pipeline parallelism is on and {@code _EEE} when expert parallelism is.
 *
 * @param tp tensor-parallel rank
 * @param pp pipeline stage
 * @param ep expert-parallel rank
 */
public record RankFile(int tp, int pp, int ep) {

    private static final Pattern NAME = Pattern.compile("mp_rank_(\\d{2})(?:_(\\d{3}))?(?:_(\\d{3}))?");

    /** The directory name of this rank under a checkpoint of {@code layout}. */
    public String dirName(ParallelLayout layout) {
        StringBuilder s = new StringBuilder(String.format("mp_rank_%02d", tp));
        if (layout.pp() > 1) {
            s.append(String.format("_%03d", pp));
        }
        if (layout.ep() > 1) {
            s.append(String.format("_%03d", ep));
        }
        return s.toString();
    }

    /** Every rank of a layout, tensor rank fastest, then expert, then pipeline. */
    public static List<RankFile> all(ParallelLayout layout) {
        List<RankFile> out = new ArrayList<>();
        for (int p = 0; p < layout.pp(); p++) {
            for (int e = 0; e < layout.ep(); e++) {
                for (int t = 0; t < layout.tp(); t++) {
                    out.add(new RankFile(t, p, e));
                }
            }
        }
        return out;
    }

    /**
     * The numbers in a directory name: {@code [tp]}, {@code [tp, x]} or {@code [tp, pp, ep]}, or
     * null when it is not a rank directory. A single second number is ambiguous (a pipeline
     * stage, or an expert rank without pipeline parallelism); the caller decides.
     */
    public static int[] parse(String dirName) {
        Matcher m = NAME.matcher(dirName);
        if (!m.matches()) {
            return null;
        }
        if (m.group(2) == null) {
            return new int[] {Integer.parseInt(m.group(1))};
        }
        if (m.group(3) == null) {
            return new int[] {Integer.parseInt(m.group(1)), Integer.parseInt(m.group(2))};
        }
        return new int[] {Integer.parseInt(m.group(1)), Integer.parseInt(m.group(2)), Integer.parseInt(m.group(3))};
    }
}
