package org.djlmegatron.data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.function.Consumer;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** The MMIDIDX reader and builder: exact bytes, round trips, merging, and every refusal. */
class IndexedDatasetTest {

    @TempDir
    Path tmp;

    @Test
    void writesTheBytesMegatronWrites() throws IOException {
        Path prefix = tmp.resolve("small");
        try (IndexedDatasetBuilder b = IndexedDatasetBuilder.create(prefix, TokenDType.UINT16)) {
            b.addDocument(new int[] {1, 2, 3});
            b.addDocument(new int[] {7, 8, 9, 10, 65535}, new int[] {2, 3}); // two sequences
            b.addDocument(new int[0]); // no sequences: only a document index
            b.finish();
        }
        ByteBuffer idx = ByteBuffer.allocate(34 + 3 * 4 + 3 * 8 + 4 * 8).order(ByteOrder.LITTLE_ENDIAN);
        idx.put(new byte[] {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0}).putLong(1).put((byte) 8).putLong(3).putLong(4);
        idx.putInt(3).putInt(2).putInt(3); // lengths
        idx.putLong(0).putLong(6).putLong(10); // byte pointers
        idx.putLong(0).putLong(1).putLong(3).putLong(3); // document indices
        ByteBuffer bin = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN);
        for (int t : new int[] {1, 2, 3, 7, 8, 9, 10, 65535}) {
            bin.putShort((short) t);
        }
        assertThat(Files.readAllBytes(IndexedDataset.idxPath(prefix))).isEqualTo(idx.array());
        assertThat(Files.readAllBytes(IndexedDataset.binPath(prefix))).isEqualTo(bin.array());
        try (IndexedDataset d = IndexedDataset.open(prefix)) {
            assertThat(d.sequenceCount()).isEqualTo(3);
            assertThat(d.documentCount()).isEqualTo(3);
            assertThat(d.documentIndex(2)).isEqualTo(3);
            assertThat(d.documentIndex(3)).isEqualTo(3);
            assertThat(d.get(1)).containsExactly(7, 8);
            assertThat(d.get(2, 1, 2)).containsExactly(10, 65535);
        }
    }

    @ParameterizedTest
    @EnumSource(TokenDType.class)
    void roundTripsEveryDtypeAcrossMappingWindows(TokenDType dtype) throws IOException {
        Path prefix = tmp.resolve(dtype.name());
        int[][] docs = {{0, 1, 2, 3, 4, 5, 6}, {127, -128, 5}, {}, {100, 101, 102, 103, 104, 105, 106, 107, 108}};
        boolean unsigned = dtype == TokenDType.UINT8 || dtype == TokenDType.UINT16;
        try (IndexedDatasetBuilder b = IndexedDatasetBuilder.create(prefix, dtype)) {
            for (int[] doc : docs) {
                b.addDocument(unsigned ? Arrays.stream(doc).map(t -> t & 0x7F).toArray() : doc);
            }
            b.finish();
        }
        try (IndexedDataset d = IndexedDataset.open(prefix);
                MappedBytes bin = MappedBytes.map(IndexedDataset.binPath(prefix), 4)) { // 16-byte windows
            assertThat(d.dtype()).isEqualTo(dtype);
            int seq = 0;
            long pos = 0;
            for (int[] doc : docs) {
                if (doc.length == 0) {
                    continue;
                }
                long[] expected = Arrays.stream(unsigned ? Arrays.stream(doc).map(t -> t & 0x7F).toArray() : doc)
                        .asLongStream().toArray();
                assertThat(d.get(seq)).isEqualTo(expected);
                long[] viaSmallWindows = new long[doc.length];
                bin.readTokens(pos, dtype, viaSmallWindows, 0, doc.length);
                assertThat(viaSmallWindows).isEqualTo(expected);
                pos += (long) doc.length * dtype.size();
                seq++;
            }
        }
    }

    @Test
    void mergingEqualsWritingEverythingInOne() throws IOException {
        Path a = DataFixtures.writeDocuments(tmp.resolve("a"), 3, 5);
        Path b = DataFixtures.writeDocuments(tmp.resolve("b"), 2, 0, 4);
        Path merged = tmp.resolve("merged");
        try (IndexedDatasetBuilder m = IndexedDatasetBuilder.create(merged, TokenDType.UINT16);
                IndexedDataset da = IndexedDataset.open(a);
                IndexedDataset db = IndexedDataset.open(b)) {
            m.addIndex(da);
            m.addIndex(db);
            m.finish();
        }
        Path direct = tmp.resolve("direct");
        try (IndexedDatasetBuilder d = IndexedDatasetBuilder.create(direct, TokenDType.UINT16);
                IndexedDataset da = IndexedDataset.open(a);
                IndexedDataset db = IndexedDataset.open(b)) {
            for (IndexedDataset src : new IndexedDataset[] {da, db}) {
                for (long doc = 0; doc < src.documentCount(); doc++) {
                    long s = src.documentIndex(doc);
                    d.addDocument(s == src.documentIndex(doc + 1) ? new int[0]
                            : Arrays.stream(src.get(s)).mapToInt(t -> (int) t).toArray());
                }
            }
            d.finish();
        }
        assertThat(Files.readAllBytes(IndexedDataset.idxPath(merged))).isEqualTo(Files.readAllBytes(IndexedDataset.idxPath(direct)));
        assertThat(Files.readAllBytes(IndexedDataset.binPath(merged))).isEqualTo(Files.readAllBytes(IndexedDataset.binPath(direct)));
        try (IndexedDataset m = IndexedDataset.open(merged)) {
            assertThat(m.documentCount()).isEqualTo(5);
            assertThat(m.get(2)).containsExactly(0, 1); // b's first document
        }
    }

    @Test
    void refusesToMergeAnotherDtype() throws IOException {
        Path a = DataFixtures.writeDocuments(tmp.resolve("a"), 3);
        try (IndexedDatasetBuilder m = IndexedDatasetBuilder.create(tmp.resolve("m"), TokenDType.INT32);
                IndexedDataset da = IndexedDataset.open(a)) {
            assertThatThrownBy(() -> m.addIndex(da)).isInstanceOf(InvalidDataException.class)
                    .hasMessageContaining("dtype uint16 cannot be merged into a int32 dataset");
        }
    }

    @Test
    void abandonedBuilderLeavesNothing() throws IOException {
        try (IndexedDatasetBuilder b = IndexedDatasetBuilder.create(tmp.resolve("x"), TokenDType.UINT16)) {
            b.addDocument(new int[] {1, 2});
        }
        try (Stream<Path> files = Files.list(tmp)) {
            assertThat(files).isEmpty();
        }
    }

    @Test
    void refusesTokensOutsideTheDtype() throws IOException {
        try (IndexedDatasetBuilder b = IndexedDatasetBuilder.create(tmp.resolve("x"), TokenDType.UINT16)) {
            assertThatThrownBy(() -> b.addDocument(new int[] {1, 65536}))
                    .hasMessageContaining("token 65536 does not fit the dataset dtype uint16");
        }
    }

    @Test
    void refusesWrongMagic() throws IOException {
        Path p = corrupted(idx -> idx.put(0, (byte) 'X'));
        assertThatThrownBy(() -> IndexedDataset.open(p)).isInstanceOf(InvalidDataException.class)
                .hasMessageContaining("x.idx: not an MMIDIDX index: header magic is XMIDIDX\\x00\\x00");
    }

    @Test
    void refusesWrongVersion() throws IOException {
        Path p = corrupted(idx -> idx.putLong(9, 2));
        assertThatThrownBy(() -> IndexedDataset.open(p)).hasMessageContaining("index version 2 is not supported, expected 1");
    }

    @Test
    void refusesNonTokenAndUnknownDtypeCodes() throws IOException {
        Path f32 = corrupted(idx -> idx.put(17, (byte) 7));
        assertThatThrownBy(() -> IndexedDataset.open(f32)).hasMessageContaining("dtype code 7 (float32, not a token type)");
        Path unknown = corrupted(idx -> idx.put(17, (byte) 42));
        assertThatThrownBy(() -> IndexedDataset.open(unknown))
                .hasMessageContaining("dtype code 42 is not a token dtype; expected one of 1 (uint8)");
    }

    @Test
    void refusesCountsThatDisagreeWithTheIndexSize() throws IOException {
        Path p = corrupted(idx -> idx.putLong(18, 3)); // 3 sequences claimed, 2 stored
        assertThatThrownBy(() -> IndexedDataset.open(p)).hasMessageContaining("x.idx: file is")
                .hasMessageContaining("3 sequences, 3 document indices) needs");
    }

    @Test
    void refusesLengthsThatDisagreeWithTheBin() throws IOException {
        Path p = corrupted(idx -> idx.putInt(34 + 4, 6)); // second sequence claims 6 tokens, the .bin holds 5
        assertThatThrownBy(() -> IndexedDataset.open(p))
                .hasMessageContaining("x.bin: file is 16 bytes but")
                .hasMessageContaining("describes 9 uint16 tokens = 18 bytes");
    }

    @Test
    void refusesPointersThatSkipBytes() throws IOException {
        Path p = corrupted(idx -> idx.putLong(34 + 2 * 4 + 8, 8));
        assertThatThrownBy(() -> IndexedDataset.open(p))
                .hasMessageContaining("sequence 1 starts at byte 8 of the .bin, expected 6");
    }

    @Test
    void refusesDocumentIndicesThatDisagree() throws IOException {
        Path notZero = corrupted(idx -> idx.putLong(34 + 2 * 12, 1));
        assertThatThrownBy(() -> IndexedDataset.open(notZero)).hasMessageContaining("must start with 0, found 1");
        Path shortEnd = corrupted(idx -> idx.putLong(34 + 2 * 12 + 16, 1));
        assertThatThrownBy(() -> IndexedDataset.open(shortEnd))
                .hasMessageContaining("the last document ends at sequence 1, expected 2");
    }

    @Test
    void refusesTruncatedHeaderAndMissingFiles() throws IOException {
        Path p = DataFixtures.writeDocuments(tmp.resolve("x"), 3, 5);
        Files.write(IndexedDataset.idxPath(p), new byte[10]);
        assertThatThrownBy(() -> IndexedDataset.open(p)).hasMessageContaining("10 bytes is shorter than the 34-byte");
        Files.delete(IndexedDataset.binPath(p));
        assertThatThrownBy(() -> IndexedDataset.open(p)).hasMessageContaining("x.bin: no such file");
    }

    /** A dataset of documents of 3 and 5 uint16 tokens, with its .idx bytes edited. */
    private Path corrupted(Consumer<ByteBuffer> edit) throws IOException {
        Path p = DataFixtures.writeDocuments(tmp.resolve("x"), 3, 5);
        Path idx = IndexedDataset.idxPath(p);
        ByteBuffer buf = ByteBuffer.wrap(Files.readAllBytes(idx)).order(ByteOrder.LITTLE_ENDIAN);
        edit.accept(buf);
        Files.write(idx, buf.array());
        return p;
    }
}
