package org.djlmegatron.io.torch;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/** Paths of the Megatron fixtures (read in place) and a helper to open whole files as slices. */
final class TorchFixtures {

    private TorchFixtures() {}

    static Path megatron(String model) {
        return Path.of(System.getProperty("djlm.repo.root", ".")).resolve("../shared/fixtures/megatron")
                .resolve(model).toAbsolutePath().normalize();
    }

    static Path legacyFile(String model) {
        return megatron(model).resolve("torch/iter_0000001/mp_rank_00/model_optim_rng.pt");
    }

    static Path distDir(String model) {
        return megatron(model).resolve("torch_dist/iter_0000001");
    }

    /** Opens {@code file} for reading; the caller closes the channel. */
    static FileChannel read(Path file) throws IOException {
        return FileChannel.open(file, StandardOpenOption.READ);
    }

    static FileSlice whole(Path file, FileChannel ch) throws IOException {
        return new FileSlice(file, ch, 0, ch.size());
    }
}
