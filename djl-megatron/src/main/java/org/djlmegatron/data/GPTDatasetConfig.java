package org.djlmegatron.data;

import java.nio.file.Path;

/**
 * How GPT samples are cut and shuffled.
 *
 * @param sequenceLength {@code --seq-length}: tokens per sample minus one, at least 2
 * @param seed {@code --seed}: seeds numpy's {@code RandomState} for the document and sample
 *     shuffles (Megatron's default is 1234)
 * @param cacheDir {@code --data-cache-path}: where index files are cached, or null for none
 */
public record GPTDatasetConfig(int sequenceLength, long seed, Path cacheDir) {

    public GPTDatasetConfig {
        if (sequenceLength < 2) {
            throw new IllegalArgumentException("--seq-length must be at least 2, found " + sequenceLength);
        }
        if (seed < 0 || seed > 0xFFFFFFFFL) {
            throw new IllegalArgumentException("--seed must be in [0, 2^32), found " + seed);
        }
    }
}
