package org.djlmegatron.generation.server;

import static org.assertj.core.api.Assertions.assertThat;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import org.djlmegatron.bridge.BridgeFixtures;
import org.djlmegatron.data.ByteLevelTokenizer;
import org.djlmegatron.generation.ModelRanks;
import org.djlmegatron.generation.Prompt;
import org.djlmegatron.generation.Sampling;
import org.djlmegatron.generation.TextGenerator;
import org.djlmegatron.generation.TokenListener;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The server on a free loopback port, called with the JDK's HttpClient: Megatron's {@code PUT /api}
 * and {@code POST /v1/completions} on the llama fixture at TP=2 (byte-level tokenizer: its ids fit
 * the fixture's 512-token vocabulary), bad requests answered 400 while the server keeps serving,
 * and concurrent requests batched with the answers each would get alone.
 */
class TextGenerationServerTest {

    private static TextGenerator generator;
    private static TextGenerationServer server;
    private static final HttpClient CLIENT = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();

    @BeforeAll
    static void start() throws Exception {
        generator = new TextGenerator(ModelRanks.load(BridgeFixtures.hf("llama"), null, 2), new ByteLevelTokenizer(), null);
        server = new TextGenerationServer(generator, "llama", "127.0.0.1", 0, 8);
    }

    @AfterAll
    static void stop() {
        server.close();
        generator.close();
    }

    private static HttpResponse<String> send(String method, String path, String body) throws Exception {
        HttpRequest req = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + server.port() + path))
                .timeout(Duration.ofMinutes(2)).header("Content-Type", "application/json")
                .method(method, HttpRequest.BodyPublishers.ofString(body)).build();
        return CLIENT.send(req, HttpResponse.BodyHandlers.ofString());
    }

    private static JsonObject ok(HttpResponse<String> r) {
        assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
        return JsonParser.parseString(r.body()).getAsJsonObject();
    }

    private static long[] greedy(String text, int n) {
        long[] ids = generator.encode(text);
        return generator.generate(List.of(new Prompt(ids, n, Sampling.GREEDY, 0)), false, TokenListener.NONE).get(0)
                .allIds();
    }

    private static long[] longs(JsonArray a) {
        long[] out = new long[a.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = a.get(i).getAsLong();
        }
        return out;
    }

    @Test
    void megatronApiAnswersTextTokensSegmentsAndLogprobs() throws Exception {
        JsonObject o = ok(send("PUT", "/api", "{\"prompts\": [\"Hello\", \"Hi there, model\"], \"tokens_to_generate\": 6,"
                + " \"top_k\": 1, \"logprobs\": true}"));
        JsonArray tokens = o.getAsJsonArray("tokens");
        assertThat(longs(tokens.get(0).getAsJsonArray())).containsExactly(greedy("Hello", 6));
        assertThat(longs(tokens.get(1).getAsJsonArray())).containsExactly(greedy("Hi there, model", 6));
        assertThat(o.getAsJsonArray("text").get(0).getAsString()).startsWith("Hello")
                .isEqualTo(generator.decode(greedy("Hello", 6)));
        assertThat(o.getAsJsonArray("segments").get(0).getAsJsonArray()).hasSize(5 + 6);
        assertThat(o.getAsJsonArray("logprobs").get(1).getAsJsonArray()).hasSize(15 - 1 + 6);
        assertThat(o.getAsJsonArray("logprobs").get(1).getAsJsonArray()).allSatisfy(v -> assertThat(v.getAsDouble()).isNegative());
    }

    @Test
    void completionsAnswerChoicesAndUsage() throws Exception {
        JsonObject o = ok(send("POST", "/v1/completions", "{\"model\": \"llama\", \"prompt\": \"Hello\", \"max_tokens\": 5,"
                + " \"temperature\": 0}"));
        long[] all = greedy("Hello", 5);
        JsonObject choice = o.getAsJsonArray("choices").get(0).getAsJsonObject();
        assertThat(choice.get("text").getAsString()).isEqualTo(generator.decode(java.util.Arrays.copyOfRange(all, 5, 10)));
        assertThat(choice.get("finish_reason").getAsString()).isEqualTo("length");
        assertThat(o.get("object").getAsString()).isEqualTo("text_completion");
        JsonObject usage = o.getAsJsonObject("usage");
        assertThat(usage.get("prompt_tokens").getAsInt()).isEqualTo(5);
        assertThat(usage.get("completion_tokens").getAsInt()).isEqualTo(5);
        assertThat(usage.get("total_tokens").getAsInt()).isEqualTo(10);
        // token ids as the prompt, several prompts, sampling with a seed: reproducible
        String sampled = "{\"prompt\": [[5, 6, 7], [9, 8]], \"max_tokens\": 4, \"temperature\": 0.8, \"top_p\": 0.9, \"seed\": 7}";
        JsonObject a = ok(send("POST", "/v1/completions", sampled));
        JsonObject b = ok(send("POST", "/v1/completions", sampled));
        assertThat(a.getAsJsonArray("choices")).hasSize(2);
        assertThat(a.get("choices").toString()).isEqualTo(b.get("choices").toString());
    }

    @Test
    void badRequestsGet400WithAReasonAndTheServerKeepsServing() throws Exception {
        String longPrompt = "x".repeat(200); // 200 byte tokens; the context holds 128
        String[][] cases = {
            {"PUT", "/api", "{\"prompts\": [\"Hello\"", "malformed JSON"},
            {"PUT", "/api", "not json at all", "malformed JSON"},
            {"PUT", "/api", "{\"prompts\": [\"\"]}", "empty prompt"},
            {"PUT", "/api", "{\"prompts\": []}", "prompts is empty"},
            {"PUT", "/api", "{\"tokens_to_generate\": 3}", "prompts is required"},
            {"PUT", "/api", "{\"prompts\": [\"" + longPrompt + "\"]}", "200 tokens; the context holds 128"},
            {"PUT", "/api", "{\"prompts\": [\"Hello\"], \"top_p\": 1.5}", "top_p must be in (0, 1], found 1.5"},
            {"PUT", "/api", "{\"prompts\": [\"Hello\"], \"top_p\": 0.0}", "top_p must be in (0, 1]"},
            {"PUT", "/api", "{\"prompts\": [\"Hello\"], \"temperature\": -1}", "temperature"},
            {"PUT", "/api", "{\"prompts\": [\"Hello\"], \"tokens_to_generate\": 0}", "implies logprobs"},
            {"PUT", "/api", "{\"prompts\": [\"Hello\"], \"max_len\": 3}", "unknown field \"max_len\""},
            {"POST", "/v1/completions", "{\"prompt\": \"\"}", "empty prompt"},
            {"POST", "/v1/completions", "{\"prompt\": [1, 600]}", "token id 600 is outside the vocabulary"},
            {"POST", "/v1/completions", "{\"prompt\": \"Hi\", \"top_p\": 2}", "top_p must be in (0, 1]"},
            {"POST", "/v1/completions", "{\"prompt\": \"Hi\", \"max_tokens\": \"ten\"}", "max_tokens must be an integer"},
            {"POST", "/v1/completions", "{\"prompt\": \"Hi\", \"stream\": true}", "stream is not supported"},
            {"POST", "/v1/completions", "{\"prompt\": \"Hi\", \"n\": 2}", "n must be in [1, 1]"},
        };
        for (String[] c : cases) {
            HttpResponse<String> r = send(c[0], c[1], c[2]);
            assertThat(r.statusCode()).as(c[2] + " -> " + r.body()).isEqualTo(400);
            assertThat(r.body()).as(c[2]).contains(c[3]);
        }
        assertThat(send("GET", "/api", "").statusCode()).isEqualTo(405);
        assertThat(send("POST", "/nowhere", "{}").statusCode()).isEqualTo(404);
        ok(send("PUT", "/api", "{\"prompts\": [\"still serving\"], \"tokens_to_generate\": 2}"));
    }

    @Test
    void missingTokenizerIsA400() throws Exception {
        try (TextGenerator noTokenizer = new TextGenerator(ModelRanks.load(BridgeFixtures.hf("gpt2"), null, 1), null, null);
                TextGenerationServer s = new TextGenerationServer(noTokenizer, "gpt2", "127.0.0.1", 0, 8)) {
            HttpRequest req = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + s.port() + "/api"))
                    .timeout(Duration.ofMinutes(1))
                    .PUT(HttpRequest.BodyPublishers.ofString("{\"prompts\": [\"Hello\"]}")).build();
            HttpResponse<String> r = CLIENT.send(req, HttpResponse.BodyHandlers.ofString());
            assertThat(r.statusCode()).isEqualTo(400);
            assertThat(r.body()).contains("no tokenizer");
            req = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + s.port() + "/api")).timeout(Duration.ofMinutes(1))
                    .PUT(HttpRequest.BodyPublishers.ofString("{\"prompts\": [[1, 2, 3]], \"tokens_to_generate\": 3}")).build();
            r = CLIENT.send(req, HttpResponse.BodyHandlers.ofString());
            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            JsonObject o = JsonParser.parseString(r.body()).getAsJsonObject();
            assertThat(o.has("text")).isFalse();
            assertThat(o.getAsJsonArray("tokens").get(0).getAsJsonArray()).hasSize(6);
        }
    }

    @Test
    void concurrentRequestsAreBatchedAndEachGetsItsOwnAnswer() throws Exception {
        int n = 8;
        List<String> bodies = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            bodies.add("{\"prompts\": [\"prompt number " + i + "\"], \"tokens_to_generate\": 24, \"temperature\": 0.9,"
                    + " \"random_seed\": " + (100 + i) + "}");
        }
        long before = server.batches();
        List<CompletableFuture<HttpResponse<String>>> pending = new ArrayList<>();
        for (String body : bodies) {
            pending.add(CLIENT.sendAsync(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + server.port() + "/api"))
                    .timeout(Duration.ofMinutes(2)).PUT(HttpRequest.BodyPublishers.ofString(body)).build(),
                    HttpResponse.BodyHandlers.ofString()));
        }
        List<String> together = new ArrayList<>();
        for (CompletableFuture<HttpResponse<String>> f : pending) {
            together.add(ok(f.get()).get("tokens").toString());
        }
        long batches = server.batches() - before;
        assertThat(batches).as("batches for %d concurrent requests", n).isLessThan(n);
        for (int i = 0; i < n; i++) {
            assertThat(ok(send("PUT", "/api", bodies.get(i))).get("tokens").toString()).as("request %d alone", i)
                    .isEqualTo(together.get(i));
        }
    }
}
