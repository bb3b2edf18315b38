package org.djlmegatron.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Damaged checkpoints are refused: 400 bytes of 0xFF (100 float32 NaNs) written into a saved
 * weights file fail the checksum, and with {@code --no-verify} the non-finite check, in every
 * command that reads weights; {@code logits} never reports success for non-finite output.
 */
class IntegrityTest {

    private static final String[] MODEL = {"--mock-data", "--num-layers", "1", "--hidden-size", "32",
        "--num-attention-heads", "2", "--seq-length", "16", "--vocab-size", "64", "--micro-batch-size", "2",
        "--lr", "1e-3", "--lr-decay-iters", "10"};

    @TempDir
    Path tmp;

    record Result(int rc, String err) {}

    private static Result run(String... args) {
        int[] rc = new int[1];
        String err = CliCapture.stderrOf(() -> CliCapture.stdoutOf(() -> rc[0] = Main.run(args)));
        return new Result(rc[0], err.strip());
    }

    private static String[] pretrain(String... more) {
        return Stream.concat(Stream.concat(Stream.of("pretrain-gpt"), Stream.of(MODEL)), Stream.of(more))
                .toArray(String[]::new);
    }

    /** Overwrites 400 bytes of tensor data (after the safetensors header) with 0xFF. */
    private static void damage(Path safetensors, long offsetIntoData) throws IOException {
        try (FileChannel ch = FileChannel.open(safetensors, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            ByteBuffer len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            ch.read(len, 0);
            long dataStart = 8 + len.flip().getLong();
            byte[] ff = new byte[400];
            Arrays.fill(ff, (byte) 0xFF);
            ch.write(ByteBuffer.wrap(ff), dataStart + offsetIntoData);
        }
    }

    /** {@code input_ids} [1, 8] int64, ids below the small model's vocabulary. */
    private Path smallIds() throws IOException {
        String header = "{\"input_ids\":{\"dtype\":\"I64\",\"shape\":[1,8],\"data_offsets\":[0,64]}}";
        ByteBuffer b = ByteBuffer.allocate(8 + header.length() + 64).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(header.length()).put(header.getBytes(java.nio.charset.StandardCharsets.US_ASCII));
        for (long id = 1; id <= 8; id++) {
            b.putLong(id * 3);
        }
        return Files.write(tmp.resolve("ids.safetensors"), b.array());
    }

    @Test
    void damagedTrainingCheckpointIsRefusedByResumeLogitsAndConvert() throws IOException {
        Path ckpt = tmp.resolve("ckpt");
        assertThat(run(pretrain("--train-iters", "2", "--save", ckpt.toString())).rc()).isZero();
        Path iter = ckpt.resolve("iter_0000002");
        assertThat(Files.readString(iter.resolve("metadata.json")))
                .contains("\"mp_rank_00/model.safetensors\": \"crc32c:")
                .contains("\"mp_rank_00/optim_dp_000.safetensors\": \"crc32c:")
                .contains("\"trainer_state.json\": \"crc32c:");
        Path model = iter.resolve("mp_rank_00/model.safetensors");
        damage(model, 0);

        Result resumed = run(pretrain("--train-iters", "3", "--load", ckpt.toString()));
        assertThat(resumed.rc()).isEqualTo(1);
        assertThat(resumed.err()).startsWith("djl-megatron pretrain-gpt: error: " + model + ": checksum crc32c:")
                .contains("the file is damaged; pass --no-verify");

        Result unverified = run(pretrain("--train-iters", "3", "--load", ckpt.toString(), "--no-verify"));
        assertThat(unverified.rc()).isEqualTo(1);
        assertThat(unverified.err()).contains(": tensor '").contains("holds 100 non-finite values")
                .contains("pass --allow-nonfinite");

        Path ids = smallIds();
        Path out = tmp.resolve("logits.safetensors");
        Result logits = run("logits", "--checkpoint", ckpt.toString(), "--input-ids", ids.toString(), "--output",
                out.toString());
        assertThat(logits.rc()).isEqualTo(1);
        assertThat(logits.err()).contains("checksum");

        // the user insists on loading the NaNs: logits still may not report success
        Result forced = run("logits", "--checkpoint", ckpt.toString(), "--input-ids", ids.toString(), "--output",
                out.toString(), "--no-verify", "--allow-nonfinite");
        assertThat(forced.rc()).isEqualTo(1);
        assertThat(forced.err()).contains("logits are not finite").endsWith(out + " not written");
        assertThat(out).doesNotExist();

        Result convert = run("convert", "--input", ckpt.toString(), "--output", tmp.resolve("hf").toString(),
                "--to", "hf", "--no-verify");
        assertThat(convert.rc()).isEqualTo(1);
        assertThat(convert.err()).contains("non-finite values");
        assertThat(tmp.resolve("hf")).doesNotExist();
    }

    @Test
    void convertedDjlCheckpointsRecordAndVerifyChecksums() throws IOException {
        Path djl = tmp.resolve("djl");
        assertThat(run("convert", "--input", CliCapture.fixture("hf/llama").toString(), "--output", djl.toString(),
                "--to", "djl", "--tp", "2").rc()).isZero();
        Path release = djl.resolve("release");
        assertThat(Files.readString(release.resolve("metadata.json")))
                .contains("\"mp_rank_00/model.safetensors\": \"crc32c:").contains("\"mp_rank_01/model.safetensors\": \"crc32c:");
        Path ids = CliCapture.fixture("hf/llama/golden.safetensors");
        assertThat(run("logits", "--checkpoint", djl.toString(), "--input-ids", ids.toString(), "--output",
                tmp.resolve("ok.safetensors").toString()).rc()).isZero();
        damage(release.resolve("mp_rank_01/model.safetensors"), 64);
        Result r = run("logits", "--checkpoint", djl.toString(), "--input-ids", ids.toString(), "--output",
                tmp.resolve("bad.safetensors").toString());
        assertThat(r.rc()).isEqualTo(1);
        assertThat(r.err()).contains(release.resolve("mp_rank_01/model.safetensors") + ": checksum");
    }

    @Test
    void nonFiniteWeightsInAHuggingFaceCheckpointAreRefusedNamingTheTensor() throws IOException {
        Path hf = Files.createDirectories(tmp.resolve("gpt2"));
        for (String f : new String[] {"config.json", "model.safetensors"}) {
            Files.copy(CliCapture.fixture("hf/gpt2/" + f), hf.resolve(f));
        }
        hf.resolve("model.safetensors").toFile().setWritable(true);
        damage(hf.resolve("model.safetensors"), 0);
        Path ids = CliCapture.fixture("hf/gpt2/golden.safetensors");
        Result r = run("logits", "--checkpoint", hf.toString(), "--input-ids", ids.toString(), "--output",
                tmp.resolve("l.safetensors").toString());
        assertThat(r.rc()).isEqualTo(1);
        assertThat(r.err()).startsWith("djl-megatron logits: error: " + hf + ": tensor '").contains("non-finite values");
        Result init = run(pretrain("--train-iters", "1", "--init-hf", hf.toString()));
        assertThat(init.rc()).isEqualTo(1);
        assertThat(init.err()).contains("non-finite values").contains("--allow-nonfinite");

        // let the NaN weights in: the loss is NaN, and --metrics-out still writes JSON (null, not a bare NaN)
        Path metrics = tmp.resolve("m.jsonl");
        Result forced = run("pretrain-gpt", "--init-hf", hf.toString(), "--replay-batches", ids.toString(),
                "--train-iters", "1", "--global-batch-size", "2", "--micro-batch-size", "2", "--lr", "1e-3",
                "--allow-nonfinite", "--metrics-out", metrics.toString());
        assertThat(forced.rc()).as(forced.err()).isZero();
        String line = Files.readString(metrics).strip();
        assertThat(line).contains("\"loss\":null").doesNotContain("NaN").doesNotContain("Infinity");
        com.google.gson.stream.JsonReader strict = new com.google.gson.stream.JsonReader(new java.io.StringReader(line));
        strict.setLenient(false);
        assertThat(com.google.gson.JsonParser.parseReader(strict).getAsJsonObject().get("loss").isJsonNull()).isTrue();
    }
}
