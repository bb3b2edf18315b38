package org.djlmegatron.fuzz;

import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * The contract the robustness properties check: a reader given any bytes returns a value or
 * throws its own typed exception, within a time limit; anything else (another exception, an
 * error, a hang) fails the property with the input's description.
 */
public final class Robustness {

    private static final long LIMIT_SECONDS = 5;
    private static final ExecutorService RUNNER = Executors.newCachedThreadPool(r -> {
        Thread t = new Thread(r, "robustness");
        t.setDaemon(true); // a hung reader must not keep the test JVM alive
        return t;
    });

    private Robustness() {}

    /** Runs {@code read}; passes on a value or on an exception of one of {@code typed}. */
    @SafeVarargs
    public static void valueOrTyped(String input, Callable<?> read, Class<? extends Throwable>... typed) {
        Future<?> f = RUNNER.submit(read);
        try {
            f.get(LIMIT_SECONDS, TimeUnit.SECONDS);
        } catch (TimeoutException e) {
            f.cancel(true);
            throw new AssertionError(input + ": no answer within " + LIMIT_SECONDS + " s (a hang)");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError(e);
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            for (Class<? extends Throwable> t : typed) {
                if (t.isInstance(cause)) {
                    if (cause.getMessage() == null || cause.getMessage().isBlank()) {
                        throw new AssertionError(input + ": " + t.getSimpleName() + " without a message", cause);
                    }
                    return;
                }
            }
            throw new AssertionError(input + ": " + cause, cause);
        }
    }
}
