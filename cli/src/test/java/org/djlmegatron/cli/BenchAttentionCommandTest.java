package org.djlmegatron.cli;

import static org.assertj.core.api.Assertions.assertThat;

import org.djlmegatron.engine.TorchNative;
import org.junit.jupiter.api.Test;

/**
 * {@code bench-attention} prints every block size with its ratio to one block on the native library
 * (the native stage), and on DJL's stock engine (the stock stage) says in one line what it needs.
 */
class BenchAttentionCommandTest {

    @Test
    void printsEveryBlockSizeOnTheNativeLibraryAndOtherwiseSaysWhatItNeeds() {
        int[] rc = new int[1];
        String[] err = new String[1];
        String out = CliCapture.stdoutOf(() -> err[0] = CliCapture.stderrOf(() -> rc[0] = Main.run("bench-attention",
                "--micro-batch-size", "1", "--num-attention-heads", "2", "--kv-channels", "8", "--seq-length", "40,9",
                "--block-rows", "16,5", "--warmup", "0", "--steps", "1")));
        if (!TorchNative.isAvailable()) {
            assertThat(rc[0]).isNotZero();
            assertThat(err[0].strip()).isEqualTo("djl-megatron bench-attention: error: bench-attention times the "
                    + "project's native library, which is not loaded: set PYTORCH_LIBRARY_PATH (docs/native.md)");
            return;
        }
        assertThat(rc[0]).as(err[0]).isZero();
        assertThat(out).contains("causal self-attention, batch 1, 2 heads of 8, fp32").contains("libtorch")
                .containsPattern("seq +40 +one block +[0-9.]+ ms")
                .containsPattern("seq +40 +blocks of +16 +[0-9.]+ ms = [0-9.]+x one block")
                .containsPattern("seq +9 +blocks of +5 +[0-9.]+ ms = [0-9.]+x one block");
    }
}
