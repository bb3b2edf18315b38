package org.djlmegatron.cli;

import static org.assertj.core.api.Assertions.assertThat;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.ByteArrayInputStream;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code generate} with text prompts (the llama fixture with the byte-level tokenizer, whose ids fit
 * its vocabulary): arguments, --prompts-file and stdin give the same JSONL, the stream shows prompt
 * and continuation in order, and --eos-id stops a prompt.
 */
class GenerateTextCommandTest {

    @TempDir
    Path tmp;

    private static final String LLAMA = CliCapture.fixture("hf/llama").toString();

    private List<JsonObject> run(String name, String stdin, String... args) throws Exception {
        Path out = tmp.resolve(name);
        List<String> all = new ArrayList<>(List.of("generate", "--checkpoint", LLAMA, "--tokenizer-type", "ByteLevelTokenizer",
                "--max-new-tokens", "5", "--greedy", "--output", out.toString()));
        all.addAll(List.of(args));
        InputStream old = System.in;
        System.setIn(new ByteArrayInputStream(stdin.getBytes(StandardCharsets.UTF_8)));
        String stdout;
        try {
            stdout = CliCapture.stdoutOf(() -> assertThat(Main.run(all.toArray(String[]::new))).isZero());
        } finally {
            System.setIn(old);
        }
        List<JsonObject> rows = new ArrayList<>();
        for (String line : Files.readAllLines(out)) {
            rows.add(JsonParser.parseString(line).getAsJsonObject());
        }
        for (JsonObject r : rows) {
            assertThat(stdout).contains(r.get("prompt").getAsString() + r.get("text").getAsString());
        }
        return rows;
    }

    @Test
    void argumentsFileAndStdinGiveTheSameTextResults() throws Exception {
        List<JsonObject> fromArgs = run("args.jsonl", "", "Hello", "Hi there, llama", "--tp", "2");
        assertThat(fromArgs).hasSize(2);
        assertThat(fromArgs.get(0).get("prompt").getAsString()).isEqualTo("Hello");
        assertThat(fromArgs.get(0).getAsJsonArray("prompt_ids").toString()).isEqualTo("[72,101,108,108,111]");
        assertThat(fromArgs.get(0).getAsJsonArray("ids")).hasSize(5);
        Path file = Files.writeString(tmp.resolve("prompts.txt"), "Hello\n\nHi there, llama\n");
        assertThat(run("file.jsonl", "", "--prompts-file", file.toString()).toString()).isEqualTo(fromArgs.toString());
        assertThat(run("stdin.jsonl", "Hello\nHi there, llama\n").toString()).isEqualTo(fromArgs.toString());
    }

    @Test
    void eosIdStopsThePrompt() throws Exception {
        List<JsonObject> plain = run("plain.jsonl", "", "Hello");
        long first = plain.get(0).getAsJsonArray("ids").get(0).getAsLong();
        List<JsonObject> stopped = run("stopped.jsonl", "", "Hello", "--eos-id", Long.toString(first));
        assertThat(stopped.get(0).getAsJsonArray("ids").toString()).isEqualTo("[" + first + "]");
        assertThat(stopped.get(0).get("finish_reason").getAsString()).isEqualTo("stop");
        assertThat(plain.get(0).get("finish_reason").getAsString()).isEqualTo("length");
    }
}
