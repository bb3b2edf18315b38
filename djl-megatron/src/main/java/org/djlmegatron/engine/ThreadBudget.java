package org.djlmegatron.engine;

import ai.djl.engine.Engine;
import ai.djl.pytorch.jni.JniUtils;

/**
 * How many intra-op threads libtorch may use, one rule for the stock engine and the native
 * library: the cores shared evenly between the ranks of this JVM, {@code max(1, cores / local
 * ranks)}, unless the command's {@code --intra-op-threads} or the environment's
 * {@code OMP_NUM_THREADS} says otherwise (in that order).
 *
 * <p>Without it, every rank thread's ops start as many threads as there are cores: two ranks on
 * two cores ran 1.5-2x slower than with one thread each, for identical losses; and the native
 * library (Debian's libtorch) stayed at one thread even for a single rank. libtorch's count is
 * process-wide (a rank thread's first parallel op takes the value last set), so it is set once,
 * before the rank threads start.
 */
public final class ThreadBudget {

    /** The environment variable OpenMP (and so libtorch) reads. */
    public static final String ENV = "OMP_NUM_THREADS";

    private ThreadBudget() {}

    /**
     * The intra-op threads per rank for {@code localRanks} rank threads in this JVM.
     *
     * @param flag the command's {@code --intra-op-threads}, or null
     */
    public static int intraOpThreads(Integer flag, int localRanks) {
        return resolve(flag, System.getenv(ENV), Runtime.getRuntime().availableProcessors(), localRanks);
    }

    /** The rule itself: flag, else the environment, else cores / local ranks (at least 1). */
    static int resolve(Integer flag, String env, int cores, int localRanks) {
        if (flag != null) {
            if (flag < 1) {
                throw new IllegalArgumentException("--intra-op-threads: expected a positive integer, found " + flag);
            }
            return flag;
        }
        if (env != null && !env.isBlank()) {
            try {
                int n = Integer.parseInt(env.strip());
                if (n >= 1) {
                    return n;
                }
            } catch (NumberFormatException e) {
                // refused below, with the value
            }
            throw new IllegalArgumentException(ENV + ": expected a positive integer, found '" + env + "'");
        }
        return Math.max(1, cores / Math.max(1, localRanks));
    }

    /** Sets libtorch's intra-op thread count (process-wide); call before the rank threads start. */
    public static void apply(int threads) {
        Engine.getEngine("PyTorch"); // loads libtorch and the JNI library if nothing has yet
        JniUtils.setNumThreads(threads);
    }

    /** Resolves and applies the budget for {@code localRanks} rank threads; returns the count. */
    public static int applyFor(Integer flag, int localRanks) {
        int n = intraOpThreads(flag, localRanks);
        apply(n);
        return n;
    }
}
