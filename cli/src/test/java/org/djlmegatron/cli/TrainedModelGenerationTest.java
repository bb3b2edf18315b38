package org.djlmegatron.cli;

import static org.assertj.core.api.Assertions.assertThat;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.djlmegatron.generation.TextGenerator;
import org.djlmegatron.generation.server.TextGenerationServer;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The README's path from training to text: a small GPT trained by {@code pretrain-gpt} on mock
 * data (arithmetic progressions modulo the vocabulary) at TP=2 with sequence parallelism, no
 * tokenizer, then {@code generate --prompt-ids} (it continues the progressions it learned),
 * {@code evaluate} (pretrain-gpt's own validation loss, at TP/DP 1/1 and 2/2) and {@code serve}
 * (both APIs, in-process and as the command in a separate JVM).
 */
class TrainedModelGenerationTest {

    @TempDir
    static Path tmp;

    private static Path checkpoint;
    private static String pretrainEval;

    private static final String[] SHAPE = {"--seq-length", "16", "--micro-batch-size", "16", "--global-batch-size", "16"};

    @BeforeAll
    static void train() {
        checkpoint = tmp.resolve("gpt-tiny");
        List<String> args = new ArrayList<>(List.of("pretrain-gpt", "--mock-data", "--num-layers", "2", "--hidden-size", "64",
                "--num-attention-heads", "4", "--vocab-size", "64", "--nproc-per-node", "2",
                "--tensor-model-parallel-size", "2", "--sequence-parallel", "--lr", "3e-3", "--min-lr", "3e-4",
                "--lr-warmup-iters", "10", "--lr-decay-style", "cosine", "--train-iters", "150", "--log-interval", "50",
                "--eval-interval", "150", "--eval-iters", "2", "--save", checkpoint.toString()));
        args.addAll(List.of(SHAPE));
        String out = CliCapture.stdoutOf(() -> assertThat(Main.run(args.toArray(String[]::new))).isZero());
        Matcher m = Pattern.compile("lm loss value: (\\S+) \\| lm loss PPL: (\\S+) \\|").matcher(out);
        assertThat(m.find()).as(out).isTrue();
        pretrainEval = m.group(0);
    }

    private static List<JsonObject> jsonl(Path file) throws Exception {
        List<JsonObject> out = new ArrayList<>();
        for (String line : Files.readAllLines(file)) {
            out.add(JsonParser.parseString(line).getAsJsonObject());
        }
        return out;
    }

    private static long[] longs(JsonArray a) {
        long[] out = new long[a.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = a.get(i).getAsLong();
        }
        return out;
    }

    /** The next {@code n} terms of the progression that {@code prompt} starts, modulo 64. */
    private static long[] continuation(long[] prompt, int n) {
        long stride = prompt[1] - prompt[0];
        long[] out = new long[n];
        for (int i = 0; i < n; i++) {
            out[i] = Math.floorMod(prompt[prompt.length - 1] + stride * (i + 1), 64);
        }
        return out;
    }

    private List<JsonObject> generate(int tp, String name) throws Exception {
        Path out = tmp.resolve(name);
        String stdout = CliCapture.stdoutOf(() -> assertThat(Main.run("generate", "--checkpoint", checkpoint.toString(),
                "--prompt-ids", "5,7,9,11", "--prompt-ids", "10,13,16,19", "--prompt-ids", "40,42", "--max-new-tokens", "6",
                "--greedy", "--tp", Integer.toString(tp), "--output", out.toString())).isZero());
        List<JsonObject> rows = jsonl(out);
        assertThat(stdout).contains("[5,7,9,11] -> " + String.join(" ", rows.get(0).getAsJsonArray("ids").asList()
                .stream().map(Object::toString).toList()));
        return rows;
    }

    @Test
    void generateContinuesTheLearnedProgressionsAtTp1AndTp2() throws Exception {
        List<JsonObject> tp2 = generate(2, "tp2.jsonl");
        List<JsonObject> tp1 = generate(1, "tp1.jsonl");
        assertThat(tp1.toString()).isEqualTo(tp2.toString());
        assertThat(tp2).hasSize(3);
        for (JsonObject row : tp2) {
            assertThat(row.has("text")).isFalse(); // no tokenizer
            assertThat(row.getAsJsonArray("ids")).hasSize(6);
            assertThat(row.get("finish_reason").getAsString()).isEqualTo("length");
        }
        assertThat(longs(tp2.get(0).getAsJsonArray("prompt_ids"))).containsExactly(5, 7, 9, 11);
        for (int i = 0; i < 2; i++) { // strides 2 and 3: the first three new terms are the data's rule
            long[] prompt = longs(tp2.get(i).getAsJsonArray("prompt_ids"));
            long[] ids = longs(tp2.get(i).getAsJsonArray("ids"));
            assertThat(java.util.Arrays.copyOf(ids, 3)).as("after %s", java.util.Arrays.toString(prompt))
                    .containsExactly(continuation(prompt, 3));
        }
    }

    @Test
    void evaluateGivesPretrainGptsValidationLoss() {
        for (String[] layout : new String[][] {{"1", "1", "16"}, {"2", "2", "4"}}) {
            List<String> args = new ArrayList<>(List.of("evaluate", "--checkpoint", checkpoint.toString(), "--mock-data",
                    "--eval-iters", "2", "--tp", layout[0], "--dp", layout[1]));
            args.addAll(List.of(SHAPE));
            args.set(args.indexOf("--micro-batch-size") + 1, layout[2]);
            String out = CliCapture.stdoutOf(() -> assertThat(Main.run(args.toArray(String[]::new))).isZero());
            assertThat(out).as("tp %s dp %s", layout[0], layout[1]).contains(pretrainEval);
        }
        double loss = Double.parseDouble(pretrainEval.split(" ")[3]);
        assertThat(loss).as("learned: below a uniform guess over 64 tokens").isLessThan(Math.log(64) / 2);
    }

    @Test
    void refusesBadGenerateInputWithOneLine() {
        String[][] cases = {
            {"hello", "no tokenizer"},
            {"--prompt-ids=5,x", "--prompt-ids 5,x: \"x\" is not a token id"},
            {"--prompt-ids=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17", "17 tokens; the context holds 16"},
            {"--prompt-ids=1,99", "token id 99 is outside the vocabulary [0, 64)"},
        };
        for (String[] c : cases) {
            String err = CliCapture.stderrOf(() -> assertThat(Main.run("generate", "--checkpoint", checkpoint.toString(),
                    c[0])).isEqualTo(1));
            assertThat(err.strip()).as(c[0]).doesNotContain("\n").contains(c[1]);
        }
        String err = CliCapture.stderrOf(() -> assertThat(Main.run("generate", "--checkpoint", checkpoint.toString(),
                "--prompt-ids", "1,2", "--top-p", "0")).isEqualTo(1));
        assertThat(err).contains("--top-p must be in (0, 1], found 0.0");
    }

    @Test
    void serveAnswersBothApisWithGeneratesTokens() throws Exception {
        List<JsonObject> expected = generate(1, "serve-ref.jsonl");
        HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
        try (TextGenerator gen = TextGenerator.open(checkpoint, null, 2, null, null);
                TextGenerationServer server = new TextGenerationServer(gen, "gpt-tiny", "127.0.0.1", 0, 8)) {
            String base = "http://127.0.0.1:" + server.port();
            HttpResponse<String> r = client.send(HttpRequest.newBuilder(URI.create(base + "/api")).timeout(Duration.ofMinutes(1))
                    .PUT(HttpRequest.BodyPublishers.ofString("{\"prompts\": [[5,7,9,11], [10,13,16,19]], "
                            + "\"tokens_to_generate\": 6, \"top_k\": 1}")).build(), HttpResponse.BodyHandlers.ofString());
            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            JsonArray tokens = JsonParser.parseString(r.body()).getAsJsonObject().getAsJsonArray("tokens");
            for (int i = 0; i < 2; i++) {
                long[] all = longs(tokens.get(i).getAsJsonArray());
                assertThat(java.util.Arrays.copyOfRange(all, 4, all.length))
                        .containsExactly(longs(expected.get(i).getAsJsonArray("ids")));
            }
            r = client.send(HttpRequest.newBuilder(URI.create(base + "/v1/completions")).timeout(Duration.ofMinutes(1))
                    .POST(HttpRequest.BodyPublishers.ofString("{\"prompt\": [40, 42], \"max_tokens\": 6, \"temperature\": 0}"))
                    .build(), HttpResponse.BodyHandlers.ofString());
            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            JsonObject choice = JsonParser.parseString(r.body()).getAsJsonObject().getAsJsonArray("choices").get(0)
                    .getAsJsonObject();
            assertThat(longs(choice.getAsJsonArray("token_ids"))).containsExactly(longs(expected.get(2).getAsJsonArray("ids")));
            r = client.send(HttpRequest.newBuilder(URI.create(base + "/v1/completions")).timeout(Duration.ofMinutes(1))
                    .POST(HttpRequest.BodyPublishers.ofString("{\"prompt\": \"text needs a tokenizer\"}")).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertThat(r.statusCode()).isEqualTo(400);
            assertThat(r.body()).contains("no tokenizer");
        }
    }

    @Test
    void serveCommandInItsOwnJvmPrintsItsPortAndAnswers() throws Exception {
        List<String> cmd = List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-Xmx1g",
                "-Dai.djl.offline=true", "-cp", System.getProperty("java.class.path"), "org.djlmegatron.cli.Main", "serve",
                "--checkpoint", checkpoint.toString(), "--port", "0");
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        try (BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
            String line;
            int port = -1;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
            while (port < 0 && System.nanoTime() < deadline && (line = out.readLine()) != null) {
                Matcher m = Pattern.compile("on http://127\\.0\\.0\\.1:(\\d+) ").matcher(line);
                if (m.find()) {
                    port = Integer.parseInt(m.group(1));
                }
            }
            assertThat(port).as("the serve command printed its port").isPositive();
            HttpResponse<String> r = HttpClient.newHttpClient().send(HttpRequest.newBuilder(
                    URI.create("http://127.0.0.1:" + port + "/v1/completions")).timeout(Duration.ofMinutes(1))
                    .POST(HttpRequest.BodyPublishers.ofString("{\"prompt\": [5, 7, 9, 11], \"max_tokens\": 3, \"temperature\": 0}"))
                    .build(), HttpResponse.BodyHandlers.ofString());
            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            assertThat(r.body()).contains("\"token_ids\":[13,15,17]");
        } finally {
            p.destroy();
            if (!p.waitFor(30, TimeUnit.SECONDS)) {
                p.destroyForcibly();
            }
        }
    }
}
