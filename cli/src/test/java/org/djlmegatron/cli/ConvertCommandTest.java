package org.djlmegatron.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import org.djlmegatron.io.SafetensorsReader;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code convert}, {@code logits} on every format, and {@code bench-convert}, end to end. */
class ConvertCommandTest {

    @TempDir
    Path tmp;

    private static Path fixtures() {
        return Path.of(System.getProperty("djlm.repo.root", ".")).resolve("../shared/fixtures")
                .toAbsolutePath().normalize();
    }

    @Test
    void convertsToMegatronDistAndTheLogitsCommandReadsIt() {
        Path hf = fixtures().resolve("hf/qwen2");
        Path dist = tmp.resolve("qwen2-dist");
        String out = CliCapture.stdoutOf(() -> assertThat(Main.run("convert", "--input", hf.toString(), "--output", dist.toString(),
                "--to", "megatron-dist", "--quiet")).isZero());
        assertThat(out).contains("converted hf -> megatron-dist");
        assertGoldenLogits(dist, hf.resolve("golden.safetensors"), null);
    }

    /** Expert shards written by {@code convert --ep 2} load into a {@code logits --ep 2} run (global expert numbers). */
    @org.junit.jupiter.params.ParameterizedTest
    @org.junit.jupiter.params.provider.ValueSource(strings = {"megatron", "djl"})
    void expertShardsOfConvertEp2LoadIntoLogitsEp2(String to) {
        Path hf = fixtures().resolve("hf/mixtral");
        Path converted = tmp.resolve("mixtral-" + to + "-ep2");
        CliCapture.stdoutOf(() -> assertThat(Main.run("convert", "--input", hf.toString(), "--output",
                converted.toString(), "--to", to, "--ep", "2", "--quiet")).isZero());
        Path out = tmp.resolve("logits-ep2.safetensors");
        Path golden = hf.resolve("golden.safetensors");
        CliCapture.stdoutOf(() -> assertThat(Main.run("logits", "--checkpoint", converted.toString(), "--input-ids",
                golden.toString(), "--output", out.toString(), "--ep", "2")).isZero());
        try (SafetensorsReader ours = SafetensorsReader.open(out); SafetensorsReader ref = SafetensorsReader.open(golden)) {
            float[] x = ours.loadFloats("logits");
            float[] y = ref.loadFloats("logits");
            double max = 0;
            for (int i = 0; i < x.length; i++) {
                max = Math.max(max, Math.abs(x[i] - y[i]));
            }
            assertThat(max).isLessThanOrEqualTo(1e-4);
        }
    }

    @Test
    void logitsOfMegatronFixtureWithModelConfig() throws Exception {
        Path fixture = fixtures().resolve("megatron/mcore_gpt");
        Path config = Files.writeString(tmp.resolve("mcore_gpt.json"), "{\"num_layers\": 2, \"hidden_size\": 64, "
                + "\"num_attention_heads\": 4, \"group_query_attention\": true, \"num_query_groups\": 2, "
                + "\"ffn_hidden_size\": 160, \"normalization\": \"RMSNorm\", \"norm_epsilon\": 1e-5, \"swiglu\": true, "
                + "\"add_bias_linear\": false, \"position_embedding_type\": \"rope\", \"padded_vocab_size\": 512, "
                + "\"untie_embeddings_and_output_weights\": true}");
        assertGoldenLogits(fixture.resolve("torch_dist"), fixture.resolve("golden.safetensors"), config);
    }

    @Test
    void impossibleLayoutIsOneLineAndLeavesNothing() {
        Path out = tmp.resolve("llama-tp4");
        String err = CliCapture.stderrOf(() -> assertThat(Main.run("convert", "--input", fixtures().resolve("hf/llama").toString(),
                "--output", out.toString(), "--to", "megatron", "--tp", "4")).isEqualTo(1));
        assertThat(err.strip()).doesNotContain("\n").contains("djl-megatron convert: error:")
                .contains("tensor-parallel size 4 does not divide the 2 key/value heads");
        assertThat(tmp.toFile().list()).isEmpty();
    }

    @Test
    void progressWithoutATerminalIsPlainLinesWithoutCarriageReturns() {
        Path out = tmp.resolve("llama-djl");
        String err = CliCapture.stderrOf(() -> assertThat(Main.run("convert", "--input", fixtures().resolve("hf/llama").toString(),
                "--output", out.toString(), "--to", "djl")).isZero());
        assertThat(err).doesNotContain("\r").contains("100%").endsWith("\n");
    }

    @Test
    void benchmarkReportsTheRatioToAPlainCopyAndThePeakHeap() {
        String out = CliCapture.stdoutOf(() -> assertThat(Main.run("bench-convert", "--size-gb", "0.02", "--work-dir",
                tmp.resolve("bench").toString())).isZero());
        assertThat(out).contains("plain copy").contains("x the plain copy").contains("peak heap")
                .containsPattern("peak live heap \\(after forced collections\\): \\d+ MB = [0-9.]+x the largest tensor");
    }

    private void assertGoldenLogits(Path checkpoint, Path golden, Path config) {
        Path out = tmp.resolve("logits.safetensors");
        String[] args = config == null
                ? new String[] {"logits", "--checkpoint", checkpoint.toString(), "--input-ids", golden.toString(),
                    "--output", out.toString(), "--tp", "2"}
                : new String[] {"logits", "--checkpoint", checkpoint.toString(), "--model-config", config.toString(),
                    "--input-ids", golden.toString(), "--output", out.toString(), "--tp", "2"};
        CliCapture.stdoutOf(() -> assertThat(Main.run(args)).isZero());
        try (SafetensorsReader ours = SafetensorsReader.open(out); SafetensorsReader ref = SafetensorsReader.open(golden)) {
            float[] a = ours.loadFloats("logits");
            float[] b = ref.loadFloats("logits");
            double max = 0;
            for (int i = 0; i < a.length; i++) {
                max = Math.max(max, Math.abs(a[i] - b[i]));
            }
            assertThat(max).isLessThanOrEqualTo(1e-4);
        }
    }

}
