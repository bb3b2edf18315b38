package org.djlmegatron.io.torch;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.zip.ZipFile;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.lifecycle.AfterContainer;
import net.jqwik.api.lifecycle.BeforeContainer;
import org.djlmegatron.fuzz.Mutations;
import org.djlmegatron.fuzz.Robustness;

/**
 * Robustness of the torch readers on damaged versions of Megatron-LM's own files: the pickle of a
 * {@code torch.save} archive, the archive's zip structure (local headers and central directory),
 * and a distributed checkpoint's {@code .metadata}. Each gives a value or a
 * {@link TorchFormatException}; never another exception, an out-of-memory or a hang.
 */
class TorchReadersFuzzTest {

    private static final byte[] ARCHIVE = bytes(TorchFixtures.legacyFile("mcore_gpt"));
    private static final byte[] PICKLE = pickleOf(TorchFixtures.legacyFile("mcore_gpt"));
    private static final byte[] METADATA = bytes(TorchFixtures.distDir("mcore_gpt").resolve(DcpCheckpoint.METADATA_FILE));

    private static Path dir;

    @BeforeContainer
    static void makeDir() throws IOException {
        dir = Files.createTempDirectory("torch-fuzz");
    }

    @AfterContainer
    static void removeDir() throws IOException {
        try (var files = Files.list(dir)) {
            for (Path p : files.toList()) {
                Files.delete(p);
            }
        }
        Files.delete(dir);
    }

    @Property(tries = 300)
    void damagedPicklesAreReadOrRefused(@ForAll("pickles") byte[] pickle) {
        Robustness.valueOrTyped(pickle.length + "-byte pickle", () -> PickleReader.load(pickle, "fuzz.pkl",
                PickleAllowList.TORCH, (pid, where) -> pid), TorchFormatException.class);
    }

    @Property(tries = 120)
    void damagedArchivesAreReadOrRefused(@ForAll("archives") byte[] archive) {
        Path f = write("model_optim_rng.pt", archive);
        Robustness.valueOrTyped(archive.length + "-byte archive", () -> {
            try (FileChannel ch = FileChannel.open(f)) {
                TorchArchive a = TorchArchive.open(new FileSlice(f, ch, 0, ch.size()));
                readTensors(a, a.root(), 0);
            }
            return null;
        }, TorchFormatException.class);
    }

    @Property(tries = 300)
    void damagedDistributedMetadataIsReadOrRefused(@ForAll("metadata") byte[] metadata) {
        write(DcpCheckpoint.METADATA_FILE, metadata);
        Robustness.valueOrTyped(metadata.length + "-byte .metadata", () -> {
            try (DcpCheckpoint c = DcpCheckpoint.open(dir)) {
                return c.tensors().size();
            }
        }, TorchFormatException.class);
    }

    @Provide
    Arbitrary<byte[]> pickles() {
        return Mutations.of(PICKLE, 0, PICKLE.length, 512);
    }

    @Provide
    Arbitrary<byte[]> archives() {
        // the zip's structure: the first entries' local headers and the central directory at the end
        Arbitrary<byte[]> head = Mutations.of(ARCHIVE, 0, 4096, 64);
        Arbitrary<byte[]> tail = Mutations.of(ARCHIVE, ARCHIVE.length - 4096, ARCHIVE.length, 64);
        return net.jqwik.api.Arbitraries.oneOf(head, tail);
    }

    @Provide
    Arbitrary<byte[]> metadata() {
        return Mutations.of(METADATA, 0, METADATA.length, 512);
    }

    /** Reads every tensor reachable from the unpickled object (bounded depth). */
    private static void readTensors(TorchArchive a, Object o, int depth) {
        if (depth > 64) {
            return;
        }
        if (o instanceof TorchTensor t) {
            a.readTensor(t);
        } else if (o instanceof Map<?, ?> m) {
            for (Object v : m.values()) {
                readTensors(a, v, depth + 1);
            }
        } else if (o instanceof List<?> l) {
            for (Object v : l) {
                readTensors(a, v, depth + 1);
            }
        } else if (o instanceof PyTuple t) {
            for (Object v : t.items()) {
                readTensors(a, v, depth + 1);
            }
        }
    }

    private static Path write(String name, byte[] b) {
        try {
            return Files.write(dir.resolve(name), b);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static byte[] bytes(Path p) {
        try {
            return Files.readAllBytes(p);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static byte[] pickleOf(Path archive) {
        try (ZipFile z = new ZipFile(archive.toFile())) {
            var e = z.stream().filter(x -> x.getName().endsWith("/data.pkl")).findFirst().orElseThrow();
            try (InputStream in = z.getInputStream(e)) {
                return in.readAllBytes();
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
