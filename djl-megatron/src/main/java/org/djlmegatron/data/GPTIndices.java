package org.djlmegatron.data;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;

/**
 * The three index arrays of a GPT dataset, built exactly as Megatron-LM's {@code GPTDataset}
 * builds them, so the same data, split, seed and sample count give the same samples in the same
 * order as Megatron.
 *
 * <ul>
 *   <li>document index: the split's sequence ids, repeated once per epoch, shuffled (the final
 *       epoch shuffled on its own when it is used for less than 80% of its samples);
 *   <li>sample index: for sample {@code s}, the position in the document index and the token
 *       offset where it starts; sample {@code s} runs to where sample {@code s + 1} starts,
 *       plus one token, crossing document boundaries ({@code build_sample_idx} in helpers.cpp);
 *   <li>shuffle index: a permutation of the samples (the final epoch's samples permuted apart
 *       when separated).
 * </ul>
 * Both shuffles draw from one {@link NumpyRandomState} seeded with the config's seed, document
 * index first. Java arrays bound a dataset to 2^31 document-index entries and 2^30 samples.
 *
 * @param documentIndex sequence ids, epochs times the split's sequences
 * @param sampleIndex pairs (document-index position, token offset), one more than the samples
 * @param shuffleIndex a permutation of {@code [0, samples)}
 * @param epochs passes over the split that the requested samples need
 */
record GPTIndices(int[] documentIndex, int[] sampleIndex, int[] shuffleIndex, int epochs) {

    /** Megatron's threshold below which the last epoch is shuffled separately. */
    private static final double SEPARATE_FINAL_EPOCH_THRESHOLD = 0.80;

    int samples() {
        return sampleIndex.length / 2 - 1;
    }

    /**
     * Builds the indices of sequences {@code [begin, end)}, or loads them from the cache.
     *
     * @param numSamples samples wanted, or null for one epoch
     */
    static GPTIndices of(IndexedDataset data, Split split, int begin, int end, Integer numSamples,
            GPTDatasetConfig config) {
        int[] lengths = new int[end - begin];
        long tokensPerEpoch = 0;
        for (int i = begin; i < end; i++) {
            lengths[i - begin] = data.sequenceLength(i);
            tokensPerEpoch += lengths[i - begin];
        }
        if (tokensPerEpoch < 2) {
            throw new InvalidDataException(data.prefix() + ": the " + split.label() + " split (sequences [" + begin
                    + ", " + end + ")) has " + tokensPerEpoch + " tokens; a GPT sample needs at least 2");
        }
        int seq = config.sequenceLength();
        int epochs = epochs(tokensPerEpoch, numSamples, seq);
        if (config.cacheDir() == null) {
            return build(lengths, begin, tokensPerEpoch, epochs, numSamples, config);
        }
        String description = description(data, split, begin, end, numSamples, config);
        String base = md5(description) + "-GPTDataset-" + split.label() + "-";
        Path dir = config.cacheDir();
        Path descriptionFile = dir.resolve(base + "description.txt");
        Path documentFile = dir.resolve(base + "document_index.npy");
        Path sampleFile = dir.resolve(base + "sample_index.npy");
        Path shuffleFile = dir.resolve(base + "shuffle_index.npy");
        try {
            if (Files.isRegularFile(descriptionFile) && Files.isRegularFile(documentFile)
                    && Files.isRegularFile(sampleFile) && Files.isRegularFile(shuffleFile)
                    && Files.readString(descriptionFile, StandardCharsets.UTF_8).equals(description)) {
                return new GPTIndices(NpyArray.read(documentFile).data(), NpyArray.read(sampleFile).data(),
                        NpyArray.read(shuffleFile).data(), epochs);
            }
            GPTIndices built = build(lengths, begin, tokensPerEpoch, epochs, numSamples, config);
            Files.createDirectories(dir);
            new NpyArray("<i4", new long[] {built.documentIndex.length}, built.documentIndex).write(documentFile);
            new NpyArray("<i4", new long[] {built.samples() + 1L, 2}, built.sampleIndex).write(sampleFile);
            new NpyArray("<u4", new long[] {built.shuffleIndex.length}, built.shuffleIndex).write(shuffleFile);
            // written last: a hit needs all four files, so a torn write is rebuilt, never read
            Files.writeString(descriptionFile, description, StandardCharsets.UTF_8);
            return built;
        } catch (IOException e) {
            throw new UncheckedIOException(dir + ": cannot use the index cache", e);
        }
    }

    /** Megatron's {@code _get_num_epochs}: passes until {@code numSamples * seq + 1} tokens. */
    static int epochs(long tokensPerEpoch, Integer numSamples, int seq) {
        if (numSamples == null) {
            return 1;
        }
        long requested = (long) numSamples * seq + 1;
        return Math.toIntExact(Math.max(1, (requested + tokensPerEpoch - 1) / tokensPerEpoch));
    }

    static GPTIndices build(int[] lengths, int begin, long tokensPerEpoch, int epochs, Integer numSamples,
            GPTDatasetConfig config) {
        int seq = config.sequenceLength();
        boolean separateFinalEpoch = false;
        long samplesSansFinalEpoch = 0;
        if (epochs > 1) {
            samplesSansFinalEpoch = ((epochs - 1) * tokensPerEpoch - 1) / seq;
            long fromFinalEpoch = numSamples - samplesSansFinalEpoch;
            long perEpoch = (tokensPerEpoch - 1) / seq;
            if (fromFinalEpoch < 0 || fromFinalEpoch > perEpoch + 1) {
                throw new IllegalStateException("final epoch would give " + fromFinalEpoch + " samples of "
                        + perEpoch);
            }
            separateFinalEpoch = fromFinalEpoch < (long) (SEPARATE_FINAL_EPOCH_THRESHOLD * perEpoch);
        }
        NumpyRandomState rng = new NumpyRandomState(config.seed());
        int documents = lengths.length;
        long docIndexLength = (long) epochs * documents;
        if (docIndexLength > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException(epochs + " epochs of " + documents
                    + " sequences exceed a Java array; request fewer samples or split the dataset");
        }
        int[] documentIndex = new int[(int) docIndexLength];
        for (int e = 0; e < epochs; e++) {
            for (int d = 0; d < documents; d++) {
                documentIndex[e * documents + d] = begin + d;
            }
        }
        if (separateFinalEpoch) {
            int firstEpochs = (epochs - 1) * documents;
            rng.shuffle(documentIndex, 0, firstEpochs);
            rng.shuffle(documentIndex, firstEpochs, documentIndex.length);
        } else {
            rng.shuffle(documentIndex, 0, documentIndex.length);
        }
        int[] sampleIndex = sampleIndex(lengths, begin, documentIndex, seq, epochs * tokensPerEpoch);
        int samples = sampleIndex.length / 2 - 1;
        int[] shuffleIndex = new int[samples];
        for (int i = 0; i < samples; i++) {
            shuffleIndex[i] = i;
        }
        int firstShuffled = separateFinalEpoch ? (int) samplesSansFinalEpoch : samples;
        rng.shuffle(shuffleIndex, 0, firstShuffled);
        rng.shuffle(shuffleIndex, firstShuffled, samples);
        return new GPTIndices(documentIndex, sampleIndex, shuffleIndex, epochs);
    }

    /**
     * {@code build_sample_idx} of Megatron's helpers.cpp, dropping the last partial sample:
     * walks the shuffled documents, each sample taking {@code seq + 1} tokens and the next
     * starting at the previous one's last token.
     */
    static int[] sampleIndex(int[] lengths, int begin, int[] documentIndex, int seq, long totalTokens) {
        long samples = (totalTokens - 1) / seq;
        if (samples >= Integer.MAX_VALUE / 2 - 1) {
            throw new IllegalArgumentException(samples + " samples exceed a Java array; request fewer samples");
        }
        int[] index = new int[2 * ((int) samples + 1)];
        int position = 0;
        int offset = 0;
        for (int s = 1; s <= samples; s++) {
            int remaining = seq + 1;
            while (remaining != 0) {
                int documentLength = lengths[documentIndex[position] - begin] - offset;
                remaining -= documentLength;
                if (remaining <= 0) {
                    // the sample ends inside this document; the next starts on its last token
                    offset += remaining + documentLength - 1;
                    remaining = 0;
                } else if (position == documentIndex.length - 1) {
                    // the tokens ran out exactly at the last sample (cannot happen before it)
                    offset = lengths[documentIndex[position] - begin] - 1;
                    break;
                } else {
                    position++;
                    offset = 0;
                }
            }
            index[2 * s] = position;
            index[2 * s + 1] = offset;
        }
        return index;
    }

    private static String description(IndexedDataset data, Split split, int begin, int end, Integer numSamples,
            GPTDatasetConfig config) {
        return "{\n"
                + "    \"class\": \"GPTDataset\",\n"
                + "    \"format\": \"djl-megatron index cache 1\",\n"
                + "    \"dataset_path\": \"" + data.prefix().toAbsolutePath().normalize() + "\",\n"
                + "    \"dataset_sequences\": " + data.sequenceCount() + ",\n"
                + "    \"dataset_tokens\": " + data.tokenCount() + ",\n"
                + "    \"num_samples\": " + (numSamples == null ? "null" : numSamples) + ",\n"
                + "    \"index_split\": \"" + split.label() + "\",\n"
                + "    \"indices\": [" + begin + ", " + end + "],\n"
                + "    \"random_seed\": " + config.seed() + ",\n"
                + "    \"sequence_length\": " + config.sequenceLength() + "\n"
                + "}";
    }

    private static String md5(String s) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("MD5").digest(s.getBytes(StandardCharsets.UTF_8)));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
