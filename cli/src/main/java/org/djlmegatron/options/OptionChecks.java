package org.djlmegatron.options;

/**
 * The checks every command applies to its numeric options before doing any work; each failure is
 * an {@link InvalidOptionException} naming the flag, the expectation and the value found.
 * A {@code null} value is an option not given, and passes.
 */
public final class OptionChecks {

    private OptionChecks() {}

    /** At least 1. */
    public static void positive(String flag, Number value) {
        if (value != null && value.longValue() < 1) {
            throw new InvalidOptionException(flag, "a positive integer", value);
        }
    }

    /** At least 0. */
    public static void nonNegative(String flag, Number value) {
        if (value != null && value.longValue() < 0) {
            throw new InvalidOptionException(flag, "an integer >= 0", value);
        }
    }

    /** A finite number strictly above 0. */
    public static void positiveFinite(String flag, Number value) {
        if (value != null && !(Double.isFinite(value.doubleValue()) && value.doubleValue() > 0)) {
            throw new InvalidOptionException(flag, "a finite number > 0", value);
        }
    }

    /** A finite number at least 0. */
    public static void nonNegativeFinite(String flag, Number value) {
        if (value != null && !(Double.isFinite(value.doubleValue()) && value.doubleValue() >= 0)) {
            throw new InvalidOptionException(flag, "a finite number >= 0", value);
        }
    }

    /** A number in {@code [low, high)} ({@code highInclusive}: {@code [low, high]}). */
    public static void inRange(String flag, Number value, double low, double high, boolean highInclusive) {
        if (value == null) {
            return;
        }
        double v = value.doubleValue();
        boolean ok = v >= low && (highInclusive ? v <= high : v < high); // false for NaN
        if (!ok) {
            throw new InvalidOptionException(flag, "a number in [" + format(low) + ", " + format(high)
                    + (highInclusive ? "]" : ")"), value);
        }
    }

    /** Refuses two options given together. */
    public static void exclusive(String flag, boolean given, String other, boolean otherGiven) {
        if (given && otherGiven) {
            throw new InvalidOptionException(flag, "not together with " + other, "both");
        }
    }

    private static String format(double d) {
        return d == Math.rint(d) ? Long.toString((long) d) : Double.toString(d);
    }
}
