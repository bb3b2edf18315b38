package org.djlmegatron.io.torch;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;
import java.util.zip.ZipOutputStream;
import org.djlmegatron.io.SafetensorsDType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** torch.save archives: Megatron's own file, our writer's output, and broken archives. */
class TorchArchiveTest {

    @TempDir
    Path tmp;

    @Test
    void readsMegatronLegacyCheckpoint() throws IOException {
        Path file = TorchFixtures.legacyFile("mcore_gpt");
        JsonObject golden = JsonParser.parseString(Files.readString(TorchFixtures.megatron("mcore_gpt")
                .resolve("golden.json"))).getAsJsonObject().getAsJsonObject("keys");
        try (FileChannel ch = TorchFixtures.read(file)) {
            TorchArchive a = TorchArchive.open(TorchFixtures.whole(file, ch));
            Map<?, ?> root = (Map<?, ?>) a.root();
            assertThat(root.get("checkpoint_version")).isEqualTo(3.0);
            assertThat(root.get("iteration")).isEqualTo(1L);
            Map<?, ?> model = (Map<?, ?>) root.get("model");
            assertThat(new ArrayList<Object>(model.keySet())).containsExactlyElementsOf(new ArrayList<>(golden.keySet()));
            for (Map.Entry<?, ?> e : model.entrySet()) {
                if (e.getValue() == null) {
                    assertThat((String) e.getKey()).endsWith("._extra_state");
                    continue;
                }
                TorchTensor t = (TorchTensor) e.getValue();
                long[] expected = golden.getAsJsonArray((String) e.getKey()).asList().stream()
                        .mapToLong(j -> j.getAsLong()).toArray();
                assertThat(t.shape()).containsExactly(expected);
                assertThat(t.dtype()).isEqualTo(SafetensorsDType.F32);
                assertThat(a.readTensor(t)).hasSize((int) t.byteLength());
            }
        }
    }

    @Test
    void writtenArchiveReadsBackAndIsAValidZip() throws IOException {
        Path file = tmp.resolve("model_optim_rng.pt");
        TorchTensor w = TorchTensor.contiguous("0", SafetensorsDType.F32, new long[] {3, 5});
        TorchTensor b = TorchTensor.contiguous("1", SafetensorsDType.BF16, new long[] {7});
        Map<Object, Object> model = new LinkedHashMap<>();
        model.put("w", w);
        model.put("w._extra_state", null);
        model.put("b", b);
        Map<Object, Object> root = new LinkedHashMap<>();
        root.put("model", model);
        root.put("checkpoint_version", 3.0);
        byte[] wBytes = floats(15);
        byte[] bBytes = new byte[14];
        Arrays.fill(bBytes, (byte) 0x3f);
        long length;
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            TorchSaveWriter out = TorchSaveWriter.begin(ch, 0, "model_optim_rng", root, List.of(w, b), file.toString());
            out.writeStorage("1", ByteBuffer.wrap(bBytes));
            out.writeStorage("0", ByteBuffer.wrap(wBytes));
            length = out.finish();
        }
        assertThat(Files.size(file)).isEqualTo(length);
        try (FileChannel ch = TorchFixtures.read(file)) {
            TorchArchive a = TorchArchive.open(TorchFixtures.whole(file, ch));
            assertThat(a.root()).isEqualTo(root);
            assertThat(a.readTensor(w)).isEqualTo(wBytes);
            assertThat(a.readTensor(b)).isEqualTo(bBytes);
        }
        try (ZipFile zip = new ZipFile(file.toFile())) { // checks every CRC while reading
            List<String> names = new ArrayList<>();
            for (ZipEntry e : java.util.Collections.list(zip.entries())) {
                names.add(e.getName());
                try (InputStream in = zip.getInputStream(e)) {
                    in.readAllBytes();
                }
            }
            assertThat(names).contains("model_optim_rng/data.pkl", "model_optim_rng/data/0",
                    "model_optim_rng/data/1", "model_optim_rng/byteorder", "model_optim_rng/version");
        }
    }

    @Test
    void readsStridedViewsAndSubBoxes() throws IOException {
        Path file = tmp.resolve("view.pt");
        TorchTensor full = TorchTensor.contiguous("0", SafetensorsDType.F32, new long[] {4, 6});
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            TorchSaveWriter out = TorchSaveWriter.begin(ch, 0, "view", full, List.of(full), "view");
            out.writeStorage("0", ByteBuffer.wrap(floats(24)));
            out.finish();
        }
        try (FileChannel ch = TorchFixtures.read(file)) {
            TorchArchive a = TorchArchive.open(TorchFixtures.whole(file, ch));
            // the transpose [6, 4] of the stored [4, 6]
            TorchTensor t = new TorchTensor(full.storage(), 0, new long[] {6, 4}, new long[] {1, 6});
            ByteBuffer got = ByteBuffer.wrap(a.readTensor(t)).order(ByteOrder.LITTLE_ENDIAN);
            assertThat(got.getFloat(4 * (2 * 4 + 3))).isEqualTo(3 * 6 + 2);
            byte[] box = new byte[2 * 3 * 4];
            a.copyBox(full, new long[] {1, 2}, new long[] {2, 3}, box, new long[] {2, 3}, new long[] {0, 0});
            ByteBuffer bb = ByteBuffer.wrap(box).order(ByteOrder.LITTLE_ENDIAN);
            assertThat(bb.getFloat(0)).isEqualTo(8);
            assertThat(bb.getFloat(4 * 5)).isEqualTo(16);
        }
    }

    @Test
    void truncatedArchiveIsAClearError() throws IOException {
        Path cut = tmp.resolve("cut.pt");
        byte[] whole = Files.readAllBytes(TorchFixtures.legacyFile("mcore_gpt"));
        Files.write(cut, Arrays.copyOf(whole, whole.length / 2));
        try (FileChannel ch = TorchFixtures.read(cut)) {
            assertThatThrownBy(() -> TorchArchive.open(TorchFixtures.whole(cut, ch)))
                    .isInstanceOf(TorchFormatException.class).hasMessageContaining(cut.toString())
                    .hasMessageContaining("truncated");
        }
    }

    @Test
    void storageShorterThanTheViewIsRefused() throws IOException {
        Path file = tmp.resolve("short.pt");
        TorchStorage s = new TorchStorage("0", SafetensorsDType.F32, 4);
        TorchTensor view = new TorchTensor(s, 2, new long[] {2, 2}, new long[] {2, 1});
        writeRaw(file, PickleWriter.write(Map.of("t", view)), floats(4));
        try (FileChannel ch = TorchFixtures.read(file)) {
            TorchArchive a = TorchArchive.open(TorchFixtures.whole(file, ch));
            TorchTensor t = (TorchTensor) ((Map<?, ?>) a.root()).get("t");
            assertThatThrownBy(() -> a.readTensor(t)).isInstanceOf(TorchFormatException.class)
                    .hasMessageContaining("needs element 5").hasMessageContaining("shorter: 4 elements");
        }
        Path lying = tmp.resolve("lying.pt");
        TorchTensor big = TorchTensor.contiguous("0", SafetensorsDType.F32, new long[] {10});
        writeRaw(lying, PickleWriter.write(big), floats(4));
        try (FileChannel ch = TorchFixtures.read(lying)) {
            assertThatThrownBy(() -> TorchArchive.open(TorchFixtures.whole(lying, ch)))
                    .hasMessageContaining("holds 16 bytes, shorter than the 10 F32 elements");
        }
    }

    @Test
    void picklesNamingOtherGlobalsAreRefusedInArchives() throws IOException {
        Path file = tmp.resolve("evil.pt");
        writeRaw(file, "\u0080\u0002cos\nsystem\nX\u0002\u0000\u0000\u0000ls\u0085R.".getBytes(StandardCharsets.ISO_8859_1),
                new byte[0]);
        try (FileChannel ch = TorchFixtures.read(file)) {
            assertThatThrownBy(() -> TorchArchive.open(TorchFixtures.whole(file, ch)))
                    .hasMessageContaining("evil.pt").hasMessageContaining("'os.system'");
        }
    }

    @Test
    void compressedEntriesAreRefused() throws IOException {
        Path file = tmp.resolve("deflated.pt");
        try (OutputStream os = Files.newOutputStream(file); ZipOutputStream zip = new ZipOutputStream(os)) {
            zip.putNextEntry(new ZipEntry("deflated/data.pkl"));
            zip.write(PickleWriter.write(List.of(1L)));
            zip.closeEntry();
        }
        try (FileChannel ch = TorchFixtures.read(file)) {
            assertThatThrownBy(() -> TorchArchive.open(TorchFixtures.whole(file, ch)))
                    .hasMessageContaining("'deflated/data.pkl' is compressed");
        }
    }

    /** An archive with the given pickle and one raw storage entry "0". */
    private static void writeRaw(Path file, byte[] pickle, byte[] storage) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            StoredZipWriter zip = new StoredZipWriter(ch, 0, file.toString());
            String p = file.getFileName().toString().replace(".pt", "") + "/";
            zip.putEntry(p + "data.pkl", pickle);
            zip.putEntry(p + "data/0", storage);
            zip.finish();
        }
    }

    private static byte[] floats(int n) {
        ByteBuffer b = ByteBuffer.allocate(4 * n).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < n; i++) {
            b.putFloat(i);
        }
        return b.array();
    }
}
