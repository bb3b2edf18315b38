package org.djlmegatron.data;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Interoperability with Megatron-LM's own output: preprocessing the fixture corpus reproduces
 * Megatron's {@code .bin} and {@code .idx} byte for byte at any worker count, and reading
 * Megatron's files gives exactly the documents it stored.
 */
class MegatronFixtureTest {

    private static TextTokenizer llama;

    @TempDir
    Path tmp;

    @BeforeAll
    static void loadTokenizer() {
        llama = TextTokenizer.create(HuggingFaceTextTokenizer.TYPE, DataFixtures.llama2());
    }

    @AfterAll
    static void closeTokenizer() {
        llama.close();
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 4})
    void preprocessingWritesMegatronsBytes(int workers) throws IOException {
        PreprocessConfig config = new PreprocessConfig(DataFixtures.corpusJsonl(), List.of("text"),
                tmp.resolve("corpus"), true, workers, false);
        PreprocessResult r = Preprocessor.run(config, llama, null);

        Path ours = r.datasets().get(0);
        Path theirs = DataFixtures.megatronCorpusPrefix();
        assertThat(ours.getFileName().toString()).isEqualTo("corpus_text_document");
        assertThat(r.dtype()).isEqualTo(TokenDType.UINT16);
        assertThat(r.documents()).isEqualTo(2350);
        assertThat(Files.readAllBytes(IndexedDataset.binPath(ours))).isEqualTo(Files.readAllBytes(IndexedDataset.binPath(theirs)));
        assertThat(Files.readAllBytes(IndexedDataset.idxPath(ours))).isEqualTo(Files.readAllBytes(IndexedDataset.idxPath(theirs)));
        try (Stream<Path> files = Files.list(tmp)) {
            assertThat(files.map(p -> p.getFileName().toString()))
                    .containsExactlyInAnyOrder("corpus_text_document.bin", "corpus_text_document.idx");
        }
    }

    @Test
    void readsMegatronsDocumentsExactly() throws IOException {
        Path prefix = DataFixtures.megatronCorpusPrefix();
        // an independent reading of the raw bytes, straight from the format description
        ByteBuffer idx = ByteBuffer.wrap(Files.readAllBytes(IndexedDataset.idxPath(prefix))).order(ByteOrder.LITTLE_ENDIAN);
        ByteBuffer bin = ByteBuffer.wrap(Files.readAllBytes(IndexedDataset.binPath(prefix))).order(ByteOrder.LITTLE_ENDIAN);
        int n = (int) idx.getLong(18);
        List<String> lines = Files.readAllLines(DataFixtures.corpusJsonl());
        JsonLineParser parser = new JsonLineParser(List.of("text"));
        try (IndexedDataset data = IndexedDataset.open(prefix)) {
            assertThat(data.dtype()).isEqualTo(TokenDType.UINT16);
            assertThat(data.sequenceCount()).isEqualTo(2350).isEqualTo(n);
            assertThat(data.documentCount()).isEqualTo(2350);
            assertThat(data.tokenCount()).isEqualTo(1_472_498);
            assertThat(data.get(0, 0, 6)).containsExactly(1, 8958, 2319, 13, 359, 756);
            for (int i = 0; i < n; i++) {
                int length = idx.getInt(34 + 4 * i);
                long pointer = idx.getLong(34 + 4 * n + 8 * i);
                long[] raw = new long[length];
                for (int j = 0; j < length; j++) {
                    raw[j] = Short.toUnsignedInt(bin.getShort((int) pointer + 2 * j));
                }
                assertThat(data.documentIndex(i)).isEqualTo(i);
                assertThat(data.sequenceLength(i)).isEqualTo(length);
                long[] tokens = data.get(i);
                assertThat(tokens).as("document %d", i).isEqualTo(raw);
                // what Megatron stored: tokenizer(text).input_ids (BOS first) + EOS
                byte[] line = lines.get(i).getBytes(StandardCharsets.UTF_8);
                int[] expected = llama.encode(parser.parse(line, 0, line.length)[0][0]);
                assertThat(tokens[0]).isEqualTo(1);
                assertThat(tokens[length - 1]).isEqualTo(llama.eod()).isEqualTo(2);
                assertThat(Arrays.stream(tokens, 0, length - 1).mapToInt(t -> (int) t).toArray())
                        .as("document %d", i).isEqualTo(expected);
            }
        }
    }
}
