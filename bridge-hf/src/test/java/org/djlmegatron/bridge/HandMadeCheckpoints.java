package org.djlmegatron.bridge;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipOutputStream;
import org.djlmegatron.io.torch.TorchSaveWriter;
import org.djlmegatron.io.torch.TorchTensor;

/** Writes legacy Megatron checkpoints by hand, valid or broken, for the failure tests. */
final class HandMadeCheckpoints {

    private HandMadeCheckpoints() {}

    /** {@code root/latest_checkpointed_iteration.txt} = 1 and the directory of rank file {@code rank}. */
    static Path rankFile(Path root, String rank) throws IOException {
        Files.createDirectories(root.resolve("iter_0000001").resolve(rank));
        Files.writeString(root.resolve("latest_checkpointed_iteration.txt"), "1");
        return root.resolve("iter_0000001").resolve(rank).resolve("model_optim_rng.pt");
    }

    /** A torch.save archive of {@code root} whose tensors get the given storages (by storage key). */
    static void write(Path file, Object root, List<TorchTensor> tensors, Map<String, byte[]> storages)
            throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            TorchSaveWriter w = TorchSaveWriter.begin(ch, 0, "model_optim_rng", root, tensors, file.toString());
            storages.forEach((k, v) -> w.writeStorage(k, ByteBuffer.wrap(v)));
            w.finish();
        }
    }

    /** A zip with one stored entry {@code archive/data.pkl} holding exactly {@code pickle}. */
    static void writeRawPickle(Path file, byte[] pickle) throws IOException {
        try (ZipOutputStream zip = new ZipOutputStream(Files.newOutputStream(file))) {
            ZipEntry e = new ZipEntry("archive/data.pkl");
            e.setMethod(ZipEntry.STORED);
            e.setSize(pickle.length);
            e.setCompressedSize(pickle.length);
            CRC32 crc = new CRC32();
            crc.update(pickle);
            e.setCrc(crc.getValue());
            zip.putNextEntry(e);
            zip.write(pickle);
            zip.closeEntry();
        }
    }
}
