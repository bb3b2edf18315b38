package org.djlmegatron.data;

/**
 * Consecutive lines of the input, without their {@code '\n'}, packed in one array: line
 * {@code i} is {@code data[start(i), end(i))} and has number {@code firstLine + i} (1-based).
 *
 * @param firstLine the number of the first line
 * @param data the lines' bytes back to back
 * @param ends the end offset of each line in {@code data}
 * @param count how many entries of {@code ends} are lines
 * @param inputPosition bytes of the input file consumed once this batch was read (compressed
 *     bytes for gzip), for progress against the file size
 */
record LineBatch(long firstLine, byte[] data, int[] ends, int count, long inputPosition) {

    int start(int i) {
        return i == 0 ? 0 : ends[i - 1];
    }

    int end(int i) {
        return ends[i];
    }

    /** Bytes of text in the batch (newlines not counted). */
    int textBytes() {
        return count == 0 ? 0 : ends[count - 1];
    }
}
