package org.djlmegatron.generation.server;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonNull;
import com.google.gson.JsonObject;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import org.djlmegatron.generation.Generated;
import org.djlmegatron.generation.InvalidRequestException;
import org.djlmegatron.generation.Prompt;
import org.djlmegatron.generation.Sampling;
import org.djlmegatron.generation.TextGenerator;

/**
 * An HTTP server (the JDK's {@code com.sun.net.httpserver}) for a {@link TextGenerator}:
 * Megatron-LM's text-generation API ({@code PUT /api}, as {@code tools/run_text_generation_server.py})
 * and an OpenAI-style {@code POST /v1/completions}. Requests are handled on a pool of threads,
 * validated there (a bad one gets 400 with the reason), and queued for the one generation thread,
 * which batches whatever is waiting. No request can stop the server: every failure becomes an
 * error response.
 */
public final class TextGenerationServer implements AutoCloseable {

    /** Megatron's limit on prompts per request. */
    static final int MAX_PROMPTS = 128;
    private static final int MAX_BODY_BYTES = 8 << 20;
    private static final Set<String> MEGATRON_FIELDS = Set.of("prompts", "tokens_to_generate", "logprobs",
            "temperature", "top_k", "top_p", "random_seed", "no_log");
    private static final Set<String> OPENAI_FIELDS = Set.of("model", "prompt", "max_tokens", "temperature", "top_p",
            "top_k", "n", "seed", "echo", "stop", "stream", "logprobs", "user");

    private final TextGenerator generator;
    private final String modelName;
    private final HttpServer http;
    private final ExecutorService handlers;
    private final BatchingWorker worker;
    private final SplittableRandom seeds = new SplittableRandom();
    private final AtomicLong ids = new AtomicLong();

    /**
     * Starts serving on {@code host:port} ({@code port} 0: a free one, see {@link #port()}).
     *
     * @param modelName reported as {@code model} in completions
     * @param maxBatchRows prompts decoded together at most
     */
    public TextGenerationServer(TextGenerator generator, String modelName, String host, int port, int maxBatchRows)
            throws IOException {
        this.generator = generator;
        this.modelName = modelName;
        this.worker = new BatchingWorker(generator, maxBatchRows, 1024);
        this.handlers = Executors.newFixedThreadPool(16, r -> {
            Thread t = new Thread(r, "http-handler");
            t.setDaemon(true);
            return t;
        });
        http = HttpServer.create(new InetSocketAddress(host, port), 64);
        http.setExecutor(handlers);
        http.createContext("/api", ex -> handle(ex, "PUT", this::megatron, false));
        http.createContext("/v1/completions", ex -> handle(ex, "POST", this::completions, true));
        http.createContext("/", ex -> handle(ex, null, body -> {
            throw new NotFound("no such endpoint " + ex.getRequestURI().getPath()
                    + "; try PUT /api or POST /v1/completions");
        }, true));
        http.start();
    }

    public int port() {
        return http.getAddress().getPort();
    }

    /** Batches the generation thread has run. */
    public long batches() {
        return worker.batches();
    }

    @Override
    public void close() {
        http.stop(0);
        worker.close();
        handlers.shutdownNow();
    }

    @FunctionalInterface
    private interface Endpoint {
        JsonElement answer(String body) throws Exception;
    }

    private static final class NotFound extends RuntimeException {
        private static final long serialVersionUID = 1L;

        NotFound(String message) {
            super(message);
        }
    }

    /** Runs an endpoint; every outcome, failures included, becomes one response. */
    private void handle(HttpExchange ex, String method, Endpoint endpoint, boolean jsonErrors) {
        try (ex) {
            int status;
            String reason;
            try {
                if (method != null && !method.equals(ex.getRequestMethod())) {
                    ex.getResponseHeaders().add("Allow", method);
                    respond(ex, 405, error(jsonErrors, ex.getRequestMethod() + " is not allowed; use " + method), jsonErrors);
                    return;
                }
                respond(ex, 200, endpoint.answer(readBody(ex)).toString(), true);
                return;
            } catch (InvalidRequestException e) {
                status = 400;
                reason = e.getMessage();
            } catch (NotFound e) {
                status = 404;
                reason = e.getMessage();
            } catch (BatchingWorker.BusyException e) {
                status = 503;
                reason = e.getMessage();
            } catch (TimeoutException e) {
                status = 504;
                reason = "generation did not finish within " + TextGenerator.BATCH_TIMEOUT;
            } catch (Throwable e) {
                Throwable c = e instanceof ExecutionException && e.getCause() != null ? e.getCause() : e;
                status = c instanceof InvalidRequestException ? 400 : 500;
                reason = c.getMessage() != null ? c.getMessage() : c.getClass().getSimpleName();
            }
            respond(ex, status, error(jsonErrors, reason), jsonErrors);
        } catch (Throwable ignored) {
            // the client went away: nothing to answer
        }
    }

    private static String error(boolean json, String reason) {
        if (!json) {
            return reason; // Megatron's server answers errors as plain text
        }
        JsonObject e = new JsonObject();
        e.addProperty("message", reason);
        e.addProperty("type", "invalid_request_error");
        JsonObject o = new JsonObject();
        o.add("error", e);
        return o.toString();
    }

    private static void respond(HttpExchange ex, int status, String body, boolean json) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", json ? "application/json" : "text/plain; charset=utf-8");
        ex.sendResponseHeaders(status, bytes.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(bytes);
        }
    }

    private static String readBody(HttpExchange ex) throws IOException {
        try (InputStream in = ex.getRequestBody()) {
            ByteArrayOutputStream buf = new ByteArrayOutputStream();
            byte[] chunk = new byte[8192];
            int n;
            while ((n = in.read(chunk)) > 0) {
                buf.write(chunk, 0, n);
                if (buf.size() > MAX_BODY_BYTES) {
                    throw new InvalidRequestException("request body over " + MAX_BODY_BYTES + " bytes");
                }
            }
            return buf.toString(StandardCharsets.UTF_8);
        }
    }

    /** Megatron's {@code PUT /api}. */
    private JsonElement megatron(String body) throws Exception {
        RequestFields f = RequestFields.parse(body, MEGATRON_FIELDS);
        List<String> texts = new ArrayList<>();
        List<long[]> prompts = f.prompts("prompts", generator, texts);
        if (prompts.size() > MAX_PROMPTS) {
            throw new InvalidRequestException("Maximum number of prompts is " + MAX_PROMPTS + ", found " + prompts.size());
        }
        int tokens = f.integer("tokens_to_generate", 64, 0, Integer.MAX_VALUE);
        boolean logprobs = f.bool("logprobs", false);
        if (tokens == 0 && !logprobs) {
            throw new InvalidRequestException("tokens_to_generate=0 implies logprobs should be True");
        }
        double temperature = f.number("temperature", 1.0);
        if (!(temperature > 0 && temperature <= 100)) {
            throw new InvalidRequestException("temperature must be a positive number less than or equal to 100.0, found "
                    + temperature);
        }
        int topK = f.integer("top_k", 0, 0, 1000);
        double topP = f.number("top_p", 1.0);
        f.bool("no_log", false);
        Sampling s = Sampling.sample(temperature, topK, topP); // top_k 1 is greedy, as in Megatron
        List<Generated> out = run(prompts, tokens, s, f.longValue("random_seed", -1), logprobs);
        JsonObject o = new JsonObject();
        JsonArray tokenLists = new JsonArray();
        JsonArray textList = new JsonArray();
        JsonArray segments = new JsonArray();
        JsonArray logprobLists = new JsonArray();
        boolean hasTokenizer = generator.tokenizer().isPresent();
        for (int i = 0; i < out.size(); i++) {
            Generated g = out.get(i);
            long[] all = g.allIds();
            tokenLists.add(array(all));
            if (hasTokenizer) {
                String text = texts.get(i) != null ? texts.get(i) + generator.decode(g.ids()) : generator.decode(all);
                textList.add(text);
                JsonArray seg = new JsonArray();
                for (long id : all) {
                    seg.add(generator.decode(new long[] {id}));
                }
                segments.add(seg);
            }
            if (logprobs) {
                JsonArray lp = new JsonArray();
                for (double v : g.logprobs()) {
                    lp.add(v);
                }
                logprobLists.add(lp);
            }
        }
        if (hasTokenizer) {
            o.add("text", textList);
            o.add("segments", segments);
        }
        o.add("tokens", tokenLists);
        if (logprobs) {
            o.add("logprobs", logprobLists);
        }
        return o;
    }

    /** OpenAI-style {@code POST /v1/completions}. */
    private JsonElement completions(String body) throws Exception {
        RequestFields f = RequestFields.parse(body, OPENAI_FIELDS);
        if (f.integer("n", 1, 1, 1) != 1) {
            throw new InvalidRequestException("n must be 1");
        }
        if (f.bool("stream", false)) {
            throw new InvalidRequestException("stream is not supported; use the generate command for streamed output");
        }
        if (f.has("stop")) {
            throw new InvalidRequestException("stop is not supported (generation stops at the end-of-sequence token)");
        }
        List<String> texts = new ArrayList<>();
        List<long[]> prompts = f.prompts("prompt", generator, texts);
        if (prompts.size() > MAX_PROMPTS) {
            throw new InvalidRequestException("at most " + MAX_PROMPTS + " prompts per request, found " + prompts.size());
        }
        int maxTokens = f.integer("max_tokens", 16, 0, Integer.MAX_VALUE);
        double temperature = f.number("temperature", 1.0);
        if (!(temperature >= 0 && temperature <= 100)) {
            throw new InvalidRequestException("temperature must be in [0, 100], found " + temperature);
        }
        double topP = f.number("top_p", 1.0);
        int topK = f.integer("top_k", 0, 0, Integer.MAX_VALUE);
        Sampling s = temperature == 0 ? Sampling.GREEDY : Sampling.sample(temperature, topK, topP);
        if (temperature == 0) {
            Sampling.sample(1.0, topK, topP); // still refuses a bad top_p
        }
        boolean echo = f.bool("echo", false);
        boolean logprobs = f.has("logprobs") && f.integer("logprobs", 0, 0, 5) >= 0;
        List<Generated> out = run(prompts, maxTokens, s, f.longValue("seed", -1), logprobs);
        JsonArray choices = new JsonArray();
        long promptTokens = 0;
        long completionTokens = 0;
        boolean hasTokenizer = generator.tokenizer().isPresent();
        for (int i = 0; i < out.size(); i++) {
            Generated g = out.get(i);
            promptTokens += g.promptIds().length;
            completionTokens += g.ids().length;
            long[] shown = echo ? g.allIds() : g.ids();
            JsonObject c = new JsonObject();
            c.addProperty("index", i);
            if (hasTokenizer) {
                c.addProperty("text", generator.decode(shown));
            } else {
                c.add("text", JsonNull.INSTANCE);
            }
            c.add("token_ids", array(shown));
            c.add("logprobs", logprobs ? completionLogprobs(g) : JsonNull.INSTANCE);
            c.addProperty("finish_reason", g.finishReason());
            choices.add(c);
        }
        JsonObject usage = new JsonObject();
        usage.addProperty("prompt_tokens", promptTokens);
        usage.addProperty("completion_tokens", completionTokens);
        usage.addProperty("total_tokens", promptTokens + completionTokens);
        JsonObject o = new JsonObject();
        o.addProperty("id", "cmpl-" + ids.incrementAndGet());
        o.addProperty("object", "text_completion");
        o.addProperty("created", System.currentTimeMillis() / 1000);
        o.addProperty("model", modelName);
        o.add("choices", choices);
        o.add("usage", usage);
        return o;
    }

    /** The new tokens and their log-probabilities, OpenAI's {@code tokens} / {@code token_logprobs}. */
    private JsonObject completionLogprobs(Generated g) {
        JsonArray tokens = new JsonArray();
        JsonArray values = new JsonArray();
        int first = g.promptIds().length - 1; // logprobs start at the prompt's second token
        for (int j = 0; j < g.ids().length; j++) {
            long id = g.ids()[j];
            tokens.add(generator.tokenizer().isPresent() ? generator.decode(new long[] {id}) : Long.toString(id));
            values.add(g.logprobs()[first + j]);
        }
        JsonObject o = new JsonObject();
        o.add("tokens", tokens);
        o.add("token_logprobs", values);
        return o;
    }

    /** Validates, queues, and waits for the batch that carries these prompts. */
    private List<Generated> run(List<long[]> ids, int maxNew, Sampling s, long seed, boolean logprobs)
            throws Exception {
        long base;
        if (seed >= 0) {
            base = seed;
        } else {
            synchronized (seeds) {
                base = seeds.nextLong() >>> 1;
            }
        }
        List<Prompt> prompts = new ArrayList<>();
        for (int i = 0; i < ids.size(); i++) {
            prompts.add(new Prompt(ids.get(i), maxNew, s, base + i));
        }
        generator.check(prompts);
        return worker.submit(prompts, logprobs).get(TextGenerator.BATCH_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
    }

    private static JsonArray array(long[] ids) {
        JsonArray a = new JsonArray();
        for (long id : ids) {
            a.add(id);
        }
        return a;
    }
}
