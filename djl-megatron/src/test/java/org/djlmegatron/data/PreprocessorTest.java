package org.djlmegatron.data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import java.util.zip.GZIPOutputStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Preprocessing semantics and bad input, with the byte-level tokenizer (ids = UTF-8 bytes). */
class PreprocessorTest {

    private static final TextTokenizer BYTES = new ByteLevelTokenizer();

    @TempDir
    Path tmp;

    @Test
    void documentsAreTokensPlusEodAndEmptyDocumentsHaveNoSequence() throws IOException {
        Path in = write("a.jsonl", "{\"text\": \"hi\"}\n{\"text\": \"\"}\n{\"id\": 3, \"text\": [\"ab\", \"\", \"c\"]}\n");
        PreprocessResult r = run(in, true, 2, false);
        try (IndexedDataset d = IndexedDataset.open(r.datasets().get(0))) {
            assertThat(d.dtype()).isEqualTo(TokenDType.UINT16);
            assertThat(d.documentCount()).isEqualTo(3);
            assertThat(d.get(0)).containsExactly('h', 'i', ByteLevelTokenizer.EOD);
            // "": no tokens, so no EOD and no sequence (Megatron appends EOD only to non-empty documents)
            assertThat(d.documentIndex(1)).isEqualTo(d.documentIndex(2));
            // sentences: one sequence each, empty ones dropped, EOD on the last
            assertThat(d.documentIndex(3) - d.documentIndex(2)).isEqualTo(2);
            assertThat(d.get(1)).containsExactly('a', 'b');
            assertThat(d.get(2)).containsExactly('c', ByteLevelTokenizer.EOD);
        }
        assertThat(r.tokens()).isEqualTo(7);
    }

    @Test
    void writesOneDatasetPerKeyAndReadsGzipAndSkipsBlankLines() throws IOException {
        Path in = tmp.resolve("b.jsonl.gz");
        try (OutputStream out = new GZIPOutputStream(Files.newOutputStream(in))) {
            out.write("\uFEFF{\"q\": \"x\", \"a\": \"yz\"}\n  \n{\"a\": \"w\", \"q\": \"v\"}".getBytes(StandardCharsets.UTF_8));
        }
        PreprocessResult r = Preprocessor.run(new PreprocessConfig(in, List.of("q", "a"), tmp.resolve("out/p"), false, 1, false),
                BYTES, null);
        assertThat(r.datasets()).containsExactly(tmp.resolve("out/p_q_document"), tmp.resolve("out/p_a_document"));
        assertThat(r.blankLines()).isEqualTo(1);
        try (IndexedDataset q = IndexedDataset.open(r.datasets().get(0)); IndexedDataset a = IndexedDataset.open(r.datasets().get(1))) {
            assertThat(q.get(0)).containsExactly('x');
            assertThat(q.get(1)).containsExactly('v');
            assertThat(a.get(0)).containsExactly('y', 'z');
            assertThat(a.get(1)).containsExactly('w');
        }
    }

    @Test
    void malformedJsonNamesTheLineAndLeavesNothing() throws IOException {
        Path in = write("c.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n{\"text\": \"x\"}\n");
        assertThatThrownBy(() -> run(in, true, 2, false)).isInstanceOf(InvalidDataException.class)
                .hasMessage(in + ":3: malformed JSON at column 10: unterminated string");
        assertNothingWritten();
    }

    @Test
    void skipBadLinesCountsAndReportsThem() throws IOException {
        StringBuilder sb = new StringBuilder();
        for (int i = 1; i <= 2000; i++) {
            sb.append(i % 500 == 0 ? "{\"text\": 5}" : "{\"text\": \"d" + i + "\"}").append('\n');
        }
        Path in = write("d.jsonl", sb.toString());
        PreprocessResult r = run(in, false, 3, true);
        assertThat(r.lines()).isEqualTo(2000);
        assertThat(r.badLines()).isEqualTo(4);
        assertThat(r.documents()).isEqualTo(1996);
        assertThat(r.badLineReasons()).containsExactly(
                in + ":500: field \"text\": expected a string or an array of strings, found a number",
                in + ":1000: field \"text\": expected a string or an array of strings, found a number",
                in + ":1500: field \"text\": expected a string or an array of strings, found a number",
                in + ":2000: field \"text\": expected a string or an array of strings, found a number");
        try (IndexedDataset d = IndexedDataset.open(r.datasets().get(0))) {
            assertThat(d.get(498)).containsExactly('d', '4', '9', '9');
            assertThat(d.get(499)).containsExactly('d', '5', '0', '1');
        }
    }

    @Test
    void missingKeyNamesTheKeysFound() throws IOException {
        Path in = write("e.jsonl", "{\"text\": \"a\"}\n{\"body\": \"b\", \"id\": {\"x\": [1, 2]}}\n");
        assertThatThrownBy(() -> run(in, false, 1, false))
                .hasMessage(in + ":2: no key \"text\" (keys found: body, id)");
        assertNothingWritten();
    }

    @Test
    void invalidUtf8NamesTheByte() throws IOException {
        Path in = tmp.resolve("f.jsonl");
        Files.write(in, new byte[] {'{', '"', 't', 'e', 'x', 't', '"', ':', '"', 'a', (byte) 0xC3, '(', '"', '}', '\n'});
        assertThatThrownBy(() -> run(in, false, 1, false))
                .hasMessage(in + ":1: invalid UTF-8 at byte 11 of the line: c3");
        assertNothingWritten();
    }

    @Test
    void refusesWhatPythonsJsonRefuses() {
        JsonLineParser p = new JsonLineParser(List.of("text"));
        assertThat(reason(p, "[1, 2]")).isEqualTo("malformed JSON at column 1: expected a JSON object, found an array");
        assertThat(reason(p, "{\"text\": \"a\"} x")).isEqualTo("malformed JSON at column 15: unexpected 'x' after the JSON object");
        assertThat(reason(p, "{\"text\": \"a\u0001\"}")).isEqualTo(
                "malformed JSON at column 12: raw control character U+0001 in a string (must be escaped)");
        assertThat(reason(p, "{\"text\": \"a\", }")).isEqualTo("malformed JSON at column 15: expected a quoted key, found '}'");
        assertThat(reason(p, "{\"text\": \"\\q\"}")).isEqualTo("malformed JSON at column 11: invalid escape \\q");
        assertThat(reason(p, "{\"n\": 01, \"text\": \"a\"}")).isEqualTo(
                "malformed JSON at column 8: expected ',' or '}' in the object, found '1'");
        assertThat(reason(p, "{\"text\": \"\\ud800\"}")).isEqualTo(
                "field \"text\": unpaired surrogate \\ud800 at character 0 of the text");
        // what Python accepts, so must we
        assertThat(parse(p, "{\"n\": NaN, \"m\": -1.5e3, \"text\": \"\\u00e9\\ud83d\\ude00\", \"text\": \"last\"}"))
                .isEqualTo("last");
        assertThat(parse(p, " {\"text\" : \"t\\n\\\"q\\\"\"}\r")).isEqualTo("t\n\"q\"");
    }

    @Test
    void longTextsWithManyEscapesParseInLinearTime() {
        // 200,000 escapes in a 1.2 MB text: a parser that rescans for the closing quote after
        // every escape would take minutes here
        String text = "ab\\n\\\"".repeat(200_000);
        String parsed = parse(new JsonLineParser(List.of("text")), "{\"text\": \"" + text + "\", \"n\": 1}");
        assertThat(parsed).hasSize(4 * 200_000).startsWith("ab\n\"ab");
    }

    @Test
    void byteLevelTokenizerNeedsNoFiles() {
        try (TextTokenizer t = TextTokenizer.create("ByteLevelTokenizer", null)) {
            assertThat(t.encode("é!")).containsExactly(0xC3, 0xA9, '!');
            assertThat(t.decode(new long[] {0xC3, 0xA9, ByteLevelTokenizer.EOD, 'a'})).isEqualTo("é<eod>a");
            assertThat(t.vocabSize()).isEqualTo(257);
        }
        assertThatThrownBy(() -> TextTokenizer.create("GPT2BPETokenizer", null))
                .hasMessageContaining("GPT2BPETokenizer needs --vocab-file (vocab.json) and --merge-file");
        assertThatThrownBy(() -> TextTokenizer.create("SentencePieceTokenizer", null))
                .hasMessageContaining("unsupported --tokenizer-type SentencePieceTokenizer");
        assertThatThrownBy(() -> TextTokenizer.create("HuggingFaceTokenizer", tmp))
                .hasMessageContaining("tokenizer.json: no such file");
    }

    private PreprocessResult run(Path in, boolean appendEod, int workers, boolean skip) {
        return Preprocessor.run(new PreprocessConfig(in, List.of("text"), tmp.resolve("out/p"), appendEod, workers, skip),
                BYTES, null);
    }

    private Path write(String name, String content) throws IOException {
        return Files.writeString(tmp.resolve(name), content, StandardCharsets.UTF_8);
    }

    private void assertNothingWritten() throws IOException {
        Path out = tmp.resolve("out");
        if (Files.exists(out)) {
            try (Stream<Path> files = Files.list(out)) {
                assertThat(files).isEmpty();
            }
        }
    }

    private static String reason(JsonLineParser p, String line) {
        try {
            p.parse(line.getBytes(StandardCharsets.UTF_8), 0, line.getBytes(StandardCharsets.UTF_8).length);
            return "accepted";
        } catch (InvalidDataException e) {
            return e.getMessage();
        }
    }

    private static String parse(JsonLineParser p, String line) {
        byte[] b = line.getBytes(StandardCharsets.UTF_8);
        return p.parse(b, 0, b.length)[0][0];
    }
}
