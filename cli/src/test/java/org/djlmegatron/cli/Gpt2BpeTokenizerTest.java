package org.djlmegatron.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.djlmegatron.data.TextTokenizer;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --tokenizer-type GPT2BPETokenizer --vocab-file --merge-file} against the Hugging Face
 * tokenizers library (DJL's binding) running the same vocabulary and merges with GPT-2's
 * byte-level pre-tokenization: the same ids on tricky text, and byte for byte the same
 * {@code preprocess-data} output on the public corpus.
 */
class Gpt2BpeTokenizerTest {

    @TempDir
    static Path tmp;

    private static SmallGpt2Vocab bpe;

    @BeforeAll
    static void trainASmallVocabulary() throws IOException {
        bpe = SmallGpt2Vocab.train(CliCapture.fixture("megatron_preprocess/corpus.jsonl"), 100, 600, tmp.resolve("bpe"));
    }

    private static TextTokenizer ours() {
        return TextTokenizer.create("GPT2BPETokenizer", null, bpe.vocabFile, bpe.mergeFile);
    }

    private static TextTokenizer reference() {
        return TextTokenizer.create("HuggingFaceTokenizer", bpe.tokenizerJson, null, null);
    }

    @Test
    void sameIdsAsTheTokenizersLibraryOnTrickyText() {
        String[] texts = {"Hello world", " leading space", "trailing spaces   ", "don't we'll they're I'd you've",
            "DON'T 's", "numbers 1234567 and 3.14159, 1e-5", "tabs\tand\nnewlines\n\n\n  indented",
            "unicode: café naïve Ωmega 日本語のテキスト", "emoji 🙂👍🏽 and symbols ©®™ — “quotes”",
            "<|endoftext|> is plain text here", "", "   ", "\u00a0non-breaking\u2003em space", "a\u0301 combining"};
        try (TextTokenizer ours = ours(); TextTokenizer ref = reference()) {
            assertThat(ours.vocabSize()).isEqualTo(ref.vocabSize());
            assertThat(ours.eod()).isEqualTo(ref.eod()).isEqualTo(ours.vocabSize() - 1);
            for (String t : texts) {
                int[] ids = ours.encode(t);
                assertThat(ids).as("ids of \"%s\"", t).isEqualTo(ref.encode(t));
                assertThat(ours.decode(java.util.Arrays.stream(ids).asLongStream().toArray())).isEqualTo(t);
            }
        }
    }

    @Test
    void preprocessDataMatchesTheTokenizersLibraryByteForByte() throws IOException {
        Path corpus = CliCapture.fixture("megatron_preprocess/corpus.jsonl");
        Output gpt2 = run("preprocess-data", "--input", corpus.toString(), "--output-prefix",
                tmp.resolve("gpt2").toString(), "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file",
                bpe.vocabFile.toString(), "--merge-file", bpe.mergeFile.toString(), "--append-eod", "--workers", "2");
        assertThat(gpt2.rc).as(gpt2.err).isZero();
        Output hf = run("preprocess-data", "--input", corpus.toString(), "--output-prefix",
                tmp.resolve("hf").toString(), "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model",
                bpe.tokenizerJson.toString(), "--append-eod", "--workers", "2");
        assertThat(hf.rc).as(hf.err).isZero();
        assertThat(gpt2.out).contains("2,350 documents").contains("GPT2BPETokenizer(");
        for (String ext : new String[] {".bin", ".idx"}) {
            byte[] ours = Files.readAllBytes(tmp.resolve("gpt2_text_document" + ext));
            assertThat(ours.length).isGreaterThan(1000);
            assertThat(ours).as(ext).isEqualTo(Files.readAllBytes(tmp.resolve("hf_text_document" + ext)));
        }

        Output inspect = run("inspect-data", "--data-path", tmp.resolve("gpt2_text_document").toString(),
                "--split", "98,2,0", "--seq-length", "64", "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file",
                bpe.vocabFile.toString(), "--merge-file", bpe.mergeFile.toString(), "--show-samples", "1");
        assertThat(inspect.rc).as(inspect.err).isZero();
        try (TextTokenizer ours = ours()) {
            assertThat(inspect.out).contains("ending with EOD (id " + ours.eod() + "): 2,350");
        }
    }

    @Test
    void missingFilesAreOneLine() {
        Output o = run("preprocess-data", "--input", "x.jsonl", "--output-prefix", tmp.resolve("p").toString(),
                "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", bpe.vocabFile.toString());
        assertThat(o.rc).isEqualTo(1);
        assertThat(o.err.strip()).doesNotContain("\n").contains("GPT2BPETokenizer needs --vocab-file (vocab.json) and "
                + "--merge-file (merges.txt)");
    }

    private record Output(int rc, String out, String err) {}

    private static Output run(String... args) {
        PrintStream oldOut = System.out;
        PrintStream oldErr = System.err;
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
        System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
        int rc;
        try {
            rc = Main.run(args);
        } finally {
            System.setOut(oldOut);
            System.setErr(oldErr);
        }
        return new Output(rc, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }
}
