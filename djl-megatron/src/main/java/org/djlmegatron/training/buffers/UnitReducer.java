package org.djlmegatron.training.buffers;

import java.util.Arrays;
import java.util.function.IntFunction;
import org.djlmegatron.comm.PendingWork;

/**
 * {@code --overlap-grad-reduce} under ZeRO-3 ({@link ParameterShards}): during each micro-batch's
 * backward, a unit's reduce-scatter starts on the rank's communication thread as soon as the tape
 * has reported every parameter of the unit final ({@code Tape.onGradientsFinal}). Units are
 * Megatron-FSDP's buckets (padded and sharded on their own), so each is a true reduce-scatter.
 * They start strictly from the last unit down, whatever order a rank's parameters are reported
 * in, so that every rank hands the data-parallel group the same sequence; {@link #finish} starts
 * what is left and waits for all.
 */
final class UnitReducer {

    private final int[] unitOf;
    private final int[] paramsIn;
    private final int[] remaining;
    private final boolean[] reported;
    private final PendingWork<?>[] pending;
    /** Hands unit u's reduce-scatter to the communication thread. */
    private final IntFunction<PendingWork<?>> start;
    private boolean armed;
    private int next;

    /** @param unitOf per parameter, its unit (0 .. {@code unitCount - 1}) */
    UnitReducer(int[] unitOf, int unitCount, IntFunction<PendingWork<?>> start) {
        this.unitOf = unitOf.clone();
        this.start = start;
        paramsIn = new int[unitCount];
        for (int u : unitOf) {
            paramsIn[u]++;
        }
        remaining = new int[unitCount];
        reported = new boolean[unitOf.length];
        pending = new PendingWork<?>[unitCount];
    }

    /** Before a micro-batch's backward: from now on, finished units start their reduce-scatter. */
    void arm() {
        System.arraycopy(paramsIn, 0, remaining, 0, paramsIn.length);
        Arrays.fill(reported, false);
        Arrays.fill(pending, null);
        next = remaining.length - 1;
        armed = true;
    }

    /** Parameter {@code p}'s gradient is final for this micro-batch (the compute thread, during backward). */
    void gradientFinal(int p) {
        if (!armed || reported[p]) {
            return;
        }
        reported[p] = true;
        remaining[unitOf[p]]--;
        while (next >= 0 && remaining[next] == 0) {
            pending[next] = start.apply(next);
            next--;
        }
    }

    /**
     * Starts the units not started yet (parameters nobody reported) and waits for every unit, in
     * unit order. Waits for all even after one failed (their work reads the micro-batch's
     * gradients, which the caller frees next); the first failure is thrown, the others suppressed.
     */
    void finish() {
        if (!armed) {
            arm();
        }
        armed = false;
        while (next >= 0) {
            pending[next] = start.apply(next);
            next--;
        }
        RuntimeException failure = null;
        for (int u = 0; u < pending.length; u++) {
            if (pending[u] == null) {
                continue; // its hand-over failed, and threw there
            }
            try {
                pending[u].await();
            } catch (RuntimeException e) {
                if (failure == null) {
                    failure = e;
                } else if (failure != e) {
                    failure.addSuppressed(e);
                }
            } finally {
                pending[u] = null;
            }
        }
        if (failure != null) {
            throw failure;
        }
    }
}
