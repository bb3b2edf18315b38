package org.djlmegatron.comm.nccl;

import java.time.Duration;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/**
 * One daemon thread for the JVM that polls the groups with NCCL work still queued on a stream:
 * on CUDA a call returns as soon as its work is queued, so only a poller can notice that the work
 * never finishes (a member gone or stuck) and abort the communicator.
 */
final class Watchdog {

    private static final ScheduledExecutorService SCHEDULER = Executors.newSingleThreadScheduledExecutor(r -> {
        Thread t = new Thread(r, "nccl-watchdog");
        t.setDaemon(true);
        return t;
    });

    private Watchdog() {}

    /** Runs {@code check} every tenth of {@code timeout} (at most every 100 ms) until cancelled. */
    static ScheduledFuture<?> watch(Runnable check, Duration timeout) {
        long period = Math.max(1, Math.min(100, timeout.toMillis() / 10));
        return SCHEDULER.scheduleWithFixedDelay(check, period, period, TimeUnit.MILLISECONDS);
    }
}
