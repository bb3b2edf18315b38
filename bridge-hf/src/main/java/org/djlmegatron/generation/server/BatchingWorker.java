package org.djlmegatron.generation.server;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.djlmegatron.generation.Generated;
import org.djlmegatron.generation.Prompt;
import org.djlmegatron.generation.TextGenerator;
import org.djlmegatron.generation.TokenListener;

/**
 * The one thread that runs the model for the server: requests wait in a bounded queue, and each
 * batch takes the oldest request plus whichever others are waiting, up to {@code maxBatchRows}
 * prompts (a larger single request runs alone). Each row keeps its own sampling settings and
 * seed, so a request's answer does not depend on what it was batched with.
 */
final class BatchingWorker implements AutoCloseable {

    /** A request's prompts and where its answer goes. */
    record Job(List<Prompt> prompts, boolean logprobs, CompletableFuture<List<Generated>> result) {}

    /** The queue is full. */
    static final class BusyException extends RuntimeException {
        private static final long serialVersionUID = 1L;

        BusyException(String message) {
            super(message);
        }
    }

    private final TextGenerator generator;
    private final int maxBatchRows;
    private final BlockingQueue<Job> queue;
    private final Thread thread;
    private final AtomicLong batches = new AtomicLong();
    private volatile boolean running = true;

    BatchingWorker(TextGenerator generator, int maxBatchRows, int queueCapacity) {
        this.generator = generator;
        this.maxBatchRows = maxBatchRows;
        this.queue = new ArrayBlockingQueue<>(queueCapacity);
        this.thread = new Thread(this::loop, "generation-worker");
        thread.setDaemon(true);
        thread.start();
    }

    /** Queues a request (validated by the caller); the future completes when its batch is done. */
    CompletableFuture<List<Generated>> submit(List<Prompt> prompts, boolean logprobs) {
        Job job = new Job(prompts, logprobs, new CompletableFuture<>());
        if (!running || !queue.offer(job)) {
            throw new BusyException("the server is busy: " + queue.size() + " requests are waiting");
        }
        return job.result();
    }

    /** Batches run so far (requests served together count once). */
    long batches() {
        return batches.get();
    }

    private void loop() {
        while (running) {
            Job first;
            try {
                first = queue.poll(200, TimeUnit.MILLISECONDS);
            } catch (InterruptedException e) {
                return;
            }
            if (first == null) {
                continue;
            }
            List<Job> jobs = new ArrayList<>(List.of(first));
            int rows = first.prompts().size();
            Job next;
            while ((next = queue.peek()) != null && rows + next.prompts().size() <= maxBatchRows) {
                jobs.add(queue.poll());
                rows += next.prompts().size();
            }
            run(jobs);
        }
    }

    private void run(List<Job> jobs) {
        List<Prompt> all = new ArrayList<>();
        boolean logprobs = false;
        for (Job j : jobs) {
            all.addAll(j.prompts());
            logprobs |= j.logprobs();
        }
        try {
            List<Generated> out = generator.generate(all, logprobs, TokenListener.NONE);
            batches.incrementAndGet();
            int at = 0;
            for (Job j : jobs) {
                List<Generated> mine = new ArrayList<>(out.subList(at, at + j.prompts().size()));
                at += j.prompts().size();
                if (!j.logprobs()) {
                    mine.replaceAll(g -> new Generated(g.promptIds(), g.ids(), null, g.finishReason()));
                }
                j.result().complete(mine);
            }
        } catch (RuntimeException e) {
            jobs.forEach(j -> j.result().completeExceptionally(e));
        }
    }

    /** Stops taking requests; waiting ones fail; the batch in flight finishes (bounded wait). */
    @Override
    public void close() {
        running = false;
        Job j;
        while ((j = queue.poll()) != null) {
            j.result().completeExceptionally(new BusyException("the server is shutting down"));
        }
        try {
            thread.join(Duration.ofMinutes(1).toMillis());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
