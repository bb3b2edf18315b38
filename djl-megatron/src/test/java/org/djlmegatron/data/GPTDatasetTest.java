package org.djlmegatron.data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;
import java.util.zip.CRC32;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * GPT samples: hand-worked small cases (document boundaries, epochs, the separate final epoch,
 * shuffles), equality with Megatron-LM's index arrays (values from Megatron's algorithms run
 * with numpy), determinism, and the index cache.
 */
class GPTDatasetTest {

    @TempDir
    Path tmp;

    /** Documents of 3, 4, 2 and 5 tokens; token j of document d is 100 d + j. */
    private Path small() throws IOException {
        return DataFixtures.writeDocuments(tmp.resolve("small"), 3, 4, 2, 5);
    }

    @Test
    void oneEpochSamplesCrossDocumentBoundaries() throws IOException {
        try (IndexedDataset data = IndexedDataset.open(small())) {
            GPTDataset ds = GPTDataset.build(data, Split.TRAIN, 0, 4, null, new GPTDatasetConfig(4, 1234, null));
            // seed 1234 keeps the 4 documents in order; 14 tokens give (14 - 1) / 4 = 3 samples of 5 tokens,
            // each starting on the previous one's last token
            assertThat(ds.indices().documentIndex()).containsExactly(0, 1, 2, 3);
            assertThat(ds.indices().sampleIndex()).containsExactly(0, 0, 1, 1, 2, 1, 3, 3);
            assertThat(ds.indices().shuffleIndex()).containsExactly(1, 2, 0);
            assertThat(ds.size()).isEqualTo(3);
            assertThat(ds.epochs()).isEqualTo(1);
            assertThat(ds.sample(2)).containsExactly(0, 1, 2, 100, 101);         // sample 0: doc 0 + 2 of doc 1
            assertThat(ds.sample(0)).containsExactly(101, 102, 103, 200, 201);   // sample 1: rest of doc 1, doc 2
            assertThat(ds.sample(1)).containsExactly(201, 300, 301, 302, 303);   // sample 2: last of doc 2, doc 3
        }
    }

    @Test
    void moreSamplesTakeMoreEpochsShuffledTogether() throws IOException {
        try (IndexedDataset data = IndexedDataset.open(small())) {
            // 5 samples need 5 * 4 + 1 = 21 tokens: 2 epochs; the second gives 2 of its 3 samples,
            // not below int(0.8 * 3) = 2, so both epochs are shuffled as one
            GPTDataset ds = GPTDataset.build(data, Split.TRAIN, 0, 4, 5, new GPTDatasetConfig(4, 1234, null));
            assertThat(ds.epochs()).isEqualTo(2);
            assertThat(ds.indices().documentIndex()).containsExactly(2, 1, 2, 0, 0, 1, 3, 3);
            assertThat(ds.indices().sampleIndex()).containsExactly(0, 0, 1, 2, 3, 0, 4, 1, 5, 2, 6, 2, 7, 1);
            assertThat(ds.indices().shuffleIndex()).containsExactly(0, 4, 3, 2, 5, 1);
            assertSamplesFollowTheDocumentStream(ds, data);
        }
    }

    @Test
    void aLittleUsedFinalEpochIsShuffledSeparately() throws IOException {
        try (IndexedDataset data = IndexedDataset.open(small())) {
            // 4 samples: 2 epochs, 1 sample from the second, below int(0.8 * 3) = 2: separated
            GPTDataset ds = GPTDataset.build(data, Split.TRAIN, 0, 4, 4, new GPTDatasetConfig(4, 1234, null));
            assertThat(ds.indices().documentIndex()).containsExactly(0, 1, 2, 3, 1, 2, 3, 0);
            assertThat(ds.indices().sampleIndex()).containsExactly(0, 0, 1, 1, 2, 1, 3, 3, 4, 2, 6, 0, 6, 4);
            // the first 3 samples (all of epoch 1) are permuted among themselves, then the rest
            assertThat(ds.indices().shuffleIndex()).containsExactly(0, 2, 1, 3, 5, 4);
            assertSamplesFollowTheDocumentStream(ds, data);
        }
    }

    @Test
    void samplesAreDeterministicForASeedAndDifferAcrossSeeds() throws IOException {
        Path p = DataFixtures.writeDocuments(tmp.resolve("many"), 7, 30, 1, 12, 50, 3, 9, 22, 2, 40, 17);
        try (IndexedDataset data = IndexedDataset.open(p)) {
            GPTDataset a = GPTDataset.build(data, Split.TRAIN, 0, 11, 60, new GPTDatasetConfig(8, 42, null));
            GPTDataset b = GPTDataset.build(data, Split.TRAIN, 0, 11, 60, new GPTDatasetConfig(8, 42, null));
            GPTDataset c = GPTDataset.build(data, Split.TRAIN, 0, 11, 60, new GPTDatasetConfig(8, 43, null));
            List<long[]> sa = new ArrayList<>();
            List<long[]> sc = new ArrayList<>();
            for (int i = 0; i < a.size(); i++) {
                sa.add(a.sample(i));
                assertThat(b.sample(i)).isEqualTo(sa.get(i));
                sc.add(c.sample(i));
            }
            assertThat(a.size()).isGreaterThanOrEqualTo(60);
            assertThat(sa).usingRecursiveComparison().isNotEqualTo(sc);
            assertSamplesFollowTheDocumentStream(a, data);
        }
    }

    @Test
    void indicesEqualMegatronsOnTheFixture() throws IOException {
        // expected values: Megatron-LM's _build_document_index / build_sample_idx / _build_shuffle_index
        // run with numpy 2.4 on the fixture's sequence lengths (CRC32 of the little-endian arrays)
        try (IndexedDataset data = IndexedDataset.open(DataFixtures.megatronCorpusPrefix())) {
            SplitMatrix split = SplitMatrix.parse("969,30,1");
            assertThat(split.begin(Split.VALID, 2350)).isEqualTo(2277);
            assertThat(split.end(Split.VALID, 2350)).isEqualTo(2348);
            // 3 epochs, final one separate
            GPTDataset three = assertIndices(data, 0, 2277, 30000, 128, 1234, 3, 1552103177L, 699766166L, 769255418L);
            // and Megatron's _query_document_sample_shuffle_indices gives these samples
            assertThat(Arrays.copyOf(three.sample(0), 16)).containsExactly(
                    1835, 13259, 9790, 2696, 10195, 28723, 2, 1, 318, 1731, 28733, 1769, 28733, 1403, 28747, 11952);
            assertThat(new long[] {sum(three.sample(1)), sum(three.sample(100)), sum(three.sample(33460))})
                    .containsExactly(1526713, 1598714, 2293883);
            // one epoch
            assertIndices(data, 0, 2277, null, 128, 1234, 1, 1127680506L, 1331751249L, 637172929L);
            // 6 epochs of the valid range, shuffled as one
            assertIndices(data, 2277, 2348, 1000, 256, 7, 6, 3291521844L, 1763070393L, 2006286211L);
            // 2 epochs, final one separate
            assertIndices(data, 0, 2277, 12000, 128, 1234, 2, 3513578331L, 1788256553L, 1590979177L);
        }
    }

    @Test
    void cachedIndicesAreNumpyFilesAndAreReused() throws IOException {
        Path cache = tmp.resolve("cache");
        try (IndexedDataset data = IndexedDataset.open(small())) {
            GPTDatasetConfig config = new GPTDatasetConfig(4, 1234, cache);
            GPTDataset built = GPTDataset.build(data, Split.VALID, 0, 4, 5, config);
            List<Path> files;
            try (Stream<Path> s = Files.list(cache)) {
                files = s.sorted().toList();
            }
            assertThat(files).hasSize(4);
            assertThat(files.get(0).getFileName().toString()).matches("[0-9a-f]{32}-GPTDataset-valid-description.txt");
            Path shuffle = files.stream().filter(f -> f.toString().endsWith("shuffle_index.npy")).findFirst().orElseThrow();
            // numpy.save's exact bytes for numpy.array([0, 4, 3, 2, 5, 1], dtype=numpy.uint32)
            String header = "{'descr': '<u4', 'fortran_order': False, 'shape': (6,), }" + " ".repeat(20);
            header += " ".repeat(64 - (10 + header.length() + 1) % 64) + "\n";
            ByteBuffer expected = ByteBuffer.allocate(10 + header.length() + 24).order(ByteOrder.LITTLE_ENDIAN);
            expected.put(new byte[] {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0}).putShort((short) header.length())
                    .put(header.getBytes(StandardCharsets.US_ASCII));
            for (int v : new int[] {0, 4, 3, 2, 5, 1}) {
                expected.putInt(v);
            }
            assertThat(Files.readAllBytes(shuffle)).isEqualTo(expected.array()).hasSize(128 + 24);

            // a hit reads the files: corrupt one and the cached (wrong) order shows
            NpyArray order = NpyArray.read(shuffle);
            new NpyArray("<u4", order.shape(), new int[] {5, 4, 3, 2, 1, 0}).write(shuffle);
            GPTDataset cached = GPTDataset.build(data, Split.VALID, 0, 4, 5, config);
            assertThat(cached.sample(0)).isEqualTo(built.sample(4)); // built's shuffle puts sample 5 at 4
            // another seed is another description, so another set of files
            GPTDataset.build(data, Split.VALID, 0, 4, 5, new GPTDatasetConfig(4, 99, cache));
            try (Stream<Path> s = Files.list(cache)) {
                assertThat(s.count()).isEqualTo(8);
            }
        }
    }

    @Test
    void refusesASplitWithoutTokens() throws IOException {
        try (IndexedDataset data = IndexedDataset.open(small())) {
            assertThatThrownBy(() -> GPTDataset.build(data, Split.TEST, 4, 4, null, new GPTDatasetConfig(4, 1, null)))
                    .hasMessageContaining("the test split (sequences [4, 4)) has 0 tokens");
        }
    }

    /** Every sample is the flattened document stream (in document-index order) from s * seq, seq + 1 long. */
    private static void assertSamplesFollowTheDocumentStream(GPTDataset ds, IndexedDataset data) {
        List<Long> stream = new ArrayList<>();
        for (int d : ds.indices().documentIndex()) {
            for (long t : data.get(d)) {
                stream.add(t);
            }
        }
        int seq = ds.sequenceLength();
        int[] shuffle = ds.indices().shuffleIndex();
        for (int i = 0; i < ds.size(); i++) {
            int s = shuffle[i];
            long[] expected = stream.subList(s * seq, s * seq + seq + 1).stream().mapToLong(Long::longValue).toArray();
            assertThat(ds.sample(i)).as("sample %d (unshuffled %d)", i, s).isEqualTo(expected);
        }
    }

    private static GPTDataset assertIndices(IndexedDataset data, int begin, int end, Integer samples, int seq, long seed,
            int epochs, long documentCrc, long sampleCrc, long shuffleCrc) {
        GPTDataset ds = GPTDataset.build(data, Split.TRAIN, begin, end, samples, new GPTDatasetConfig(seq, seed, null));
        assertThat(ds.epochs()).isEqualTo(epochs);
        assertThat(crc(ds.indices().documentIndex())).as("document index").isEqualTo(documentCrc);
        assertThat(crc(ds.indices().sampleIndex())).as("sample index").isEqualTo(sampleCrc);
        assertThat(crc(ds.indices().shuffleIndex())).as("shuffle index").isEqualTo(shuffleCrc);
        return ds;
    }

    private static long sum(long[] values) {
        return Arrays.stream(values).sum();
    }

    private static long crc(int[] values) {
        ByteBuffer b = ByteBuffer.allocate(4 * values.length).order(ByteOrder.LITTLE_ENDIAN);
        b.asIntBuffer().put(values);
        CRC32 crc = new CRC32();
        crc.update(b.array());
        return crc.getValue();
    }
}
