package org.djlmegatron.pretrain;

import java.nio.file.Path;
import org.djlmegatron.data.TextTokenizer;
import org.djlmegatron.context.DocumentMasking;
import picocli.CommandLine.Option;

/** {@code pretrain-gpt}'s document masking of packed samples, Megatron-LM's flags and semantics. */
public final class DocumentMaskingOptions {

    @Option(names = "--reset-position-ids", description = "position ids restart at 0 after every EOD token "
            + "(default: off, positions 0..seq-1)")
    public boolean resetPositionIds;
    @Option(names = "--reset-attention-mask", description = "a token attends only to its own document (the EOD "
            + "belongs to the document it ends) (default: off, causal over the whole sample)")
    public boolean resetAttentionMask;
    @Option(names = "--eod-mask-loss", description = "no loss on the prediction made at an EOD token (default: off)")
    public boolean eodMaskLoss;

    /** Whether any of the flags is given. */
    public boolean any() {
        return resetPositionIds || resetAttentionMask || eodMaskLoss;
    }

    /**
     * The masking the flags ask for, keyed by the tokenizer's EOD (Megatron's {@code tokenizer.eod}),
     * or null without a flag. A flag without a tokenizer is refused: there would be no EOD to find.
     */
    public DocumentMasking masking(String tokenizerType, Path tokenizerModel, Path vocabFile, Path mergeFile) {
        if (!any()) {
            return null;
        }
        if (tokenizerType == null) {
            throw new IllegalArgumentException(flags() + " needs the tokenizer's EOD token: give --tokenizer-type "
                    + "(and --tokenizer-model or --vocab-file/--merge-file)");
        }
        try (TextTokenizer t = TextTokenizer.create(tokenizerType, tokenizerModel, vocabFile, mergeFile)) {
            return new DocumentMasking(t.eod(), resetPositionIds, resetAttentionMask, eodMaskLoss);
        }
    }

    /** The flags given, as typed. */
    public String flags() {
        StringBuilder b = new StringBuilder();
        if (resetPositionIds) {
            b.append("--reset-position-ids ");
        }
        if (resetAttentionMask) {
            b.append("--reset-attention-mask ");
        }
        if (eodMaskLoss) {
            b.append("--eod-mask-loss ");
        }
        return b.toString().trim();
    }
}
