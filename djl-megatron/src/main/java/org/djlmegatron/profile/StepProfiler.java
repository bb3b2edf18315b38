package org.djlmegatron.profile;

import ai.djl.pytorch.jni.JniUtils;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * Megatron's {@code --profile} window on one rank: libtorch's profiler records every operator the
 * rank's thread runs from the start of iteration {@code start} to the start of iteration
 * {@code end}, and writes a chrome://tracing file (open it in Perfetto or chrome://tracing, or read
 * {@link ProfileSummary}). libtorch's profiler records the thread that started it and runs once per
 * process, so one rank per JVM can be profiled at a time; work on other threads (the overlapped
 * communication thread) is not in the trace.
 */
public final class StepProfiler {

    private final long start;
    private final long end;
    private final Path out;
    private boolean running;

    /**
     * @param start first profiled iteration (0-based, as the training loop counts)
     * @param end first iteration no longer profiled
     * @param out the trace file written when the window closes
     */
    public StepProfiler(long start, long end, Path out) {
        if (start < 0 || end <= start) {
            throw new IllegalArgumentException("--profile-step-start " + start + " and --profile-step-end " + end
                    + ": expected 0 <= start < end");
        }
        this.start = start;
        this.end = end;
        this.out = out;
    }

    /** Before iteration {@code it}: starts the profiler at the window's first iteration. */
    public void beforeIteration(long it) {
        if (it == start && !running) {
            JniUtils.startProfile(false, false, false);
            running = true;
        }
    }

    /**
     * After iteration {@code it} (or when training ends early, with {@code last}): stops the
     * profiler and writes the trace once the window is over. Returns the trace written, or null.
     */
    public Path afterIteration(long it, boolean last) {
        if (!running || (it + 1 < end && !last)) {
            return null;
        }
        running = false;
        try {
            Path dir = out.toAbsolutePath().getParent();
            Files.createDirectories(dir);
            Path partial = Files.createTempFile(dir, out.getFileName().toString(), ".partial");
            try {
                JniUtils.stopProfile(partial.toString());
                Files.move(partial, out, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
            } finally {
                Files.deleteIfExists(partial);
            }
            return out;
        } catch (IOException e) {
            throw new UncheckedIOException("--profile: cannot write the trace " + out + ": " + e.getMessage(), e);
        }
    }

    /** Stops a profile still running (training failed inside the window), writing nothing. */
    public void abandon() {
        if (running) {
            running = false;
            try {
                Path scratch = Files.createTempFile("djlm-profile", ".json");
                JniUtils.stopProfile(scratch.toString());
                Files.deleteIfExists(scratch);
            } catch (IOException | RuntimeException e) {
                // the run already fails with its own error; the profiler state dies with the process
            }
        }
    }
}
