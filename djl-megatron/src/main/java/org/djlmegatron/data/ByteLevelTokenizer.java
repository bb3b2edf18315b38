package org.djlmegatron.data;

import java.nio.charset.StandardCharsets;

/**
 * The UTF-8 bytes of the text as ids 0..255, with end-of-document id 256: a tokenizer that needs
 * no files, for tests and byte-level models.
 *
 * <p>Megatron-Core's {@code ByteLevelTokenizer} library also maps text to its UTF-8 bytes but
 * puts EOS at id 0, the same id as the NUL byte; here EOD gets an id of its own so documents
 * stay separable. Vocabulary 257, so datasets are uint16. No BOS is added.
 */
public final class ByteLevelTokenizer implements TextTokenizer {

    /** The {@code --tokenizer-type} value. */
    public static final String TYPE = "ByteLevelTokenizer";

    /** The end-of-document id. */
    public static final int EOD = 256;

    @Override
    public int[] encode(String text) {
        byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
        int[] ids = new int[bytes.length];
        for (int i = 0; i < bytes.length; i++) {
            ids[i] = bytes[i] & 0xFF;
        }
        return ids;
    }

    /** Bytes back to text; EOD shows as {@code <eod>}, invalid UTF-8 as U+FFFD. */
    @Override
    public String decode(long[] ids) {
        StringBuilder sb = new StringBuilder();
        byte[] run = new byte[ids.length];
        int n = 0;
        for (long id : ids) {
            if (id >= 0 && id < EOD) {
                run[n++] = (byte) id;
            } else {
                sb.append(new String(run, 0, n, StandardCharsets.UTF_8)).append(id == EOD ? "<eod>" : "<" + id + ">");
                n = 0;
            }
        }
        return sb.append(new String(run, 0, n, StandardCharsets.UTF_8)).toString();
    }

    @Override
    public int vocabSize() {
        return EOD + 1;
    }

    @Override
    public int eod() {
        return EOD;
    }

    @Override
    public String describe() {
        return TYPE;
    }

    @Override
    public void close() {}
}
