package org.djlmegatron.cli;

import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import org.djlmegatron.generation.TextGenerator;
import org.djlmegatron.generation.server.TextGenerationServer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code serve}: Megatron's text-generation REST API and OpenAI-style completions over HTTP. */
@Command(name = "serve", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Serve a checkpoint over HTTP until interrupted: Megatron-LM's text-generation API "
                + "(PUT /api) and OpenAI-style completions (POST /v1/completions).",
            "Concurrent requests are queued and decoded together in batches by one generation thread."})
final class ServeCommand implements Callable<Integer> {

    @Mixin
    ModelOptions model;

    @Option(names = "--host", defaultValue = "127.0.0.1", description = "address to bind (default: ${DEFAULT-VALUE}, "
            + "this machine only)")
    String host;

    @Option(names = "--port", defaultValue = "5000", description = "port; 0 picks a free one, printed at start "
            + "(default: ${DEFAULT-VALUE}, Megatron's)")
    int port;

    @Option(names = "--max-batch-size", defaultValue = "8", description = "prompts decoded together at most "
            + "(default: ${DEFAULT-VALUE})")
    int maxBatchSize;

    @Override
    public Integer call() throws Exception {
        if (port < 0 || port > 65535) {
            throw new IllegalArgumentException("--port must be in [0, 65535], found " + port);
        }
        if (maxBatchSize < 1) {
            throw new IllegalArgumentException("--max-batch-size must be >= 1, found " + maxBatchSize);
        }
        TextGenerator gen = model.open();
        TextGenerationServer server;
        try {
            server = new TextGenerationServer(gen, model.checkpoint.getFileName().toString(), host, port, maxBatchSize);
        } catch (Exception e) {
            gen.close();
            throw new IllegalArgumentException("cannot serve on " + host + ":" + port + ": " + e.getMessage(), e);
        }
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.close();
            gen.close();
            stopped.countDown();
        }));
        System.out.printf("serving %s (TP=%d, context %d, %s) on http://%s:%d (PUT /api, POST /v1/completions)%n",
                model.checkpoint, model.tp, gen.contextLength(),
                gen.tokenizer().map(t -> "tokenizer " + t.describe()).orElse("no tokenizer: prompts as token ids"),
                host, server.port());
        System.out.flush();
        stopped.await();
        return 0;
    }
}
