package org.djlmegatron.bridge.hf;

import java.nio.file.Files;
import java.nio.file.Path;

/** Paths of the shared reference fixtures (produced by Hugging Face and Megatron-LM). */
final class Fixtures {

    static final String[] HF_MODELS = {"gpt2", "llama", "mixtral", "qwen2", "qwen3", "qwen3_moe"};

    private Fixtures() {}

    static Path root() {
        Path p = Path.of(System.getProperty("djlm.repo.root", ".")).resolve("../shared/fixtures")
                .toAbsolutePath().normalize();
        if (!Files.isDirectory(p)) {
            throw new IllegalStateException("reference fixtures not found at " + p);
        }
        return p;
    }

    static Path hf(String model) {
        return root().resolve("hf").resolve(model);
    }
}
