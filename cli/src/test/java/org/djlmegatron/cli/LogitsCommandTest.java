package org.djlmegatron.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import org.djlmegatron.io.SafetensorsReader;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The {@code logits} command end to end on a Hugging Face fixture, and its refusals. */
class LogitsCommandTest {

    @TempDir
    Path tmp;

    private static Path fixture(String model) {
        return Path.of(System.getProperty("djlm.repo.root", ".")).resolve("../shared/fixtures/hf").resolve(model)
                .toAbsolutePath().normalize();
    }

    @Test
    void writesGoldenLogitsAtTp2WithSequenceParallelism() {
        Path out = tmp.resolve("logits.safetensors");
        Path golden = fixture("qwen3").resolve("golden.safetensors");
        int rc = Main.run("logits", "--checkpoint", fixture("qwen3").toString(), "--input-ids", golden.toString(),
                "--output", out.toString(), "--tp", "2", "--sequence-parallel");
        assertThat(rc).isZero();
        try (SafetensorsReader ours = SafetensorsReader.open(out)) {
            assertThat(ours.info("logits").shape()).containsExactly(2, 24, 512);
        }
        assertGoldenLogits(out, golden);
    }

    /** Pipeline parallelism: one layer per stage, alone and with TP=2 + SP (world 4). */
    @org.junit.jupiter.params.ParameterizedTest(name = "pp2 tp{0}")
    @org.junit.jupiter.params.provider.ValueSource(ints = {1, 2})
    void writesGoldenLogitsAtPp2(int tp) {
        Path out = tmp.resolve("logits.safetensors");
        Path golden = fixture("llama").resolve("golden.safetensors");
        java.util.List<String> args = new java.util.ArrayList<>(java.util.List.of("logits", "--checkpoint",
                fixture("llama").toString(), "--input-ids", golden.toString(), "--output", out.toString(), "--pp", "2",
                "--tp", "" + tp));
        if (tp > 1) {
            args.add("--sequence-parallel");
        }
        assertThat(Main.run(args.toArray(new String[0]))).isZero();
        try (SafetensorsReader ours = SafetensorsReader.open(out)) {
            assertThat(ours.info("logits").shape()).containsExactly(2, 24, 512);
        }
        assertGoldenLogits(out, golden);
    }

    @Test
    void refusesPpThatDoesNotDivideTheLayersWithOneLineAndNoOutput() {
        Path out = tmp.resolve("logits.safetensors");
        String err = CliCapture.stderrOf(() -> assertThat(Main.run("logits", "--checkpoint", fixture("gpt2").toString(),
                "--input-ids", fixture("gpt2").resolve("golden.safetensors").toString(),
                "--output", out.toString(), "--pp", "4")).isEqualTo(1));
        assertThat(err.strip()).doesNotContain("\n").contains("--pp 4 does not divide the checkpoint's 2 decoder layers");
        assertThat(Files.exists(out)).isFalse();
    }

    /** Expert parallelism: two of the four experts per rank, alone and with TP=2 + SP (world 4). */
    @org.junit.jupiter.params.ParameterizedTest(name = "{0} {1}")
    @org.junit.jupiter.params.provider.CsvSource({"mixtral, 1", "mixtral, 2", "qwen3_moe, 1", "qwen3_moe, 2"})
    void writesGoldenLogitsAtEp2(String model, int tp) {
        Path out = tmp.resolve("logits.safetensors");
        Path golden = fixture(model).resolve("golden.safetensors");
        java.util.List<String> args = new java.util.ArrayList<>(java.util.List.of("logits", "--checkpoint",
                fixture(model).toString(), "--input-ids", golden.toString(), "--output", out.toString(), "--ep", "2",
                "--tp", "" + tp));
        if (tp > 1) {
            args.add("--sequence-parallel");
        }
        assertThat(Main.run(args.toArray(new String[0]))).isZero();
        assertGoldenLogits(out, golden);
    }

    @Test
    void refusesTp4OnTwoKvHeadsWithOneLineAndNoOutput() {
        Path out = tmp.resolve("logits.safetensors");
        String err = CliCapture.stderrOf(() -> assertThat(Main.run("logits", "--checkpoint", fixture("llama").toString(),
                "--input-ids", fixture("llama").resolve("golden.safetensors").toString(),
                "--output", out.toString(), "--tp", "4")).isEqualTo(1));
        assertThat(err.strip()).doesNotContain("\n")
                .contains("tensor-parallel size 4 does not divide the 2 key/value heads");
        assertThat(Files.exists(out)).isFalse();
    }

    @Test
    void missingInputKeyNamesFileAndKey() {
        Path out = tmp.resolve("logits.safetensors");
        String err = CliCapture.stderrOf(() -> assertThat(Main.run("logits", "--checkpoint", fixture("gpt2").toString(),
                "--input-ids", fixture("gpt2").resolve("golden.safetensors").toString(), "--input-key", "tokens",
                "--output", out.toString())).isEqualTo(1));
        assertThat(err).contains("golden.safetensors").contains("\"tokens\"").contains("input_ids");
        assertThat(Files.exists(out)).isFalse();
    }

    /** Our logits file against the fixture's golden logits: same size, every value within 1e-4. */
    private static void assertGoldenLogits(Path out, Path golden) {
        try (SafetensorsReader ours = SafetensorsReader.open(out); SafetensorsReader ref = SafetensorsReader.open(golden)) {
            float[] a = ours.loadFloats("logits");
            float[] b = ref.loadFloats("logits");
            assertThat(a).hasSameSizeAs(b);
            double max = 0;
            for (int i = 0; i < a.length; i++) {
                max = Math.max(max, Math.abs(a[i] - b[i]));
            }
            assertThat(max).isLessThanOrEqualTo(1e-4);
        }
    }
}
