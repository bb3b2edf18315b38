package org.djlmegatron.io.torch;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.zip.ZipFile;
import org.djlmegatron.fuzz.Mutations;
import org.djlmegatron.fuzz.Robustness;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Robustness of the torch readers on damaged versions of Megatron-LM's own files: the pickle of a
 * {@code torch.save} archive, the archive's zip structure (local headers and central directory),
 * and a distributed checkpoint's {@code .metadata}. Each gives a value or a
 * {@link TorchFormatException}; never another exception, an out-of-memory or a hang. The inputs
 * are seeded random mutations ({@link Mutations}); a failure names the seed and input.
 */
class TorchReadersFuzzTest {

    private static final byte[] ARCHIVE = bytes(TorchFixtures.legacyFile("mcore_gpt"));
    private static final byte[] PICKLE = pickleOf(TorchFixtures.legacyFile("mcore_gpt"));
    private static final byte[] METADATA = bytes(TorchFixtures.distDir("mcore_gpt").resolve(DcpCheckpoint.METADATA_FILE));

    @TempDir
    static Path dir; // removed by JUnit after the class

    @Test
    void damagedPicklesAreReadOrRefused() {
        for (int i = 0; i < 300; i++) {
            byte[] pickle = Mutations.sample(PICKLE, 0, PICKLE.length, 512, Mutations.random(Mutations.SEED, i));
            Robustness.valueOrTyped(Mutations.where(Mutations.SEED, i) + ": " + pickle.length + "-byte pickle",
                    () -> PickleReader.load(pickle, "fuzz.pkl", PickleAllowList.TORCH, (pid, where) -> pid),
                    TorchFormatException.class);
        }
    }

    @Test
    void damagedArchivesAreReadOrRefused() {
        for (int i = 0; i < 120; i++) {
            Random rnd = Mutations.random(Mutations.SEED, i);
            // the zip's structure: the first entries' local headers and the central directory at the end
            byte[] archive = rnd.nextBoolean()
                    ? Mutations.sample(ARCHIVE, 0, 4096, 64, rnd)
                    : Mutations.sample(ARCHIVE, ARCHIVE.length - 4096, ARCHIVE.length, 64, rnd);
            Path f = write("model_optim_rng.pt", archive);
            Robustness.valueOrTyped(Mutations.where(Mutations.SEED, i) + ": " + archive.length + "-byte archive", () -> {
                try (FileChannel ch = FileChannel.open(f)) {
                    TorchArchive a = TorchArchive.open(new FileSlice(f, ch, 0, ch.size()));
                    readTensors(a, a.root(), 0);
                }
                return null;
            }, TorchFormatException.class);
        }
    }

    @Test
    void damagedDistributedMetadataIsReadOrRefused() {
        for (int i = 0; i < 300; i++) {
            byte[] metadata = Mutations.sample(METADATA, 0, METADATA.length, 512, Mutations.random(Mutations.SEED, i));
            write(DcpCheckpoint.METADATA_FILE, metadata);
            Robustness.valueOrTyped(Mutations.where(Mutations.SEED, i) + ": " + metadata.length + "-byte .metadata", () -> {
                try (DcpCheckpoint c = DcpCheckpoint.open(dir)) {
                    return c.tensors().size();
                }
            }, TorchFormatException.class);
        }
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
