package org.djlmegatron.comm;

import java.time.Duration;
import java.util.concurrent.CancellationException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * Work running on a {@link CommThread}: {@link #await} returns its result on the thread that
 * waits, or throws its failure there, so that an error in asynchronous communication surfaces on
 * the step that needs its result.
 */
public final class PendingWork<T> {

    private final String what;
    private final Duration timeout;
    private final Future<T> future;

    PendingWork(String what, Duration timeout, Future<T> future) {
        this.what = what;
        this.timeout = timeout;
        this.future = future;
    }

    /** What the work is (for errors). */
    public String what() {
        return what;
    }

    /** Whether the work has ended (well or not). */
    public boolean isDone() {
        return future.isDone();
    }

    /**
     * Waits for the work. A {@link CollectiveException} of the work (it names the group, the rank
     * and the operation) is rethrown as it is, with this work named in a suppressed note; other
     * failures and a wait past the timeout become a {@link CollectiveException} naming this work.
     */
    public T await() {
        try {
            return future.get(timeout.toNanos(), TimeUnit.NANOSECONDS);
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            if (cause instanceof CollectiveException ce) {
                ce.addSuppressed(new CollectiveException("while waiting for " + what));
                throw ce;
            }
            throw new CollectiveException(what + " failed: " + cause, cause);
        } catch (TimeoutException e) {
            future.cancel(true);
            throw new CollectiveException(what + ": not finished within " + timeout.toMillis() + " ms");
        } catch (CancellationException e) {
            throw new CollectiveException(what + ": cancelled (its communication thread was closed)");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new CollectiveException("interrupted while waiting for " + what, e);
        }
    }
}
