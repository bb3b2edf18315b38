package org.rapaio.jupyter.kernel.channels;

/**
 * rapaio-jupyter-kernel 3.0.1's {@code LoopThread} (the thread of each ZeroMQ channel), with two
 * start-up races fixed; run-notebooks.sh compiles it and puts it ahead of the kernel jar on the
 * kernel's classpath.
 *
 * <p>In 3.0.1, when either race hits the shell channel's thread, that thread ends, the kernel never
 * answers a request and Jupyter gives up after 60 s ("Kernel didn't respond in 60 seconds"): about
 * one kernel start in four on a 2-core machine.
 * <ol>
 *   <li>{@code start()} set {@code running = true} after {@code Thread.start()}, so a thread that
 *       reached {@code run()} first ended at once. Here the flag is set before.
 *   <li>The channels start polling before the kernel has registered its message handlers; a
 *       request that arrives in between (Jupyter sends {@code kernel_info_request} as soon as it
 *       connects) throws a NullPointerException in the loop body, which ended the thread. Here an
 *       exception from the body is reported and the loop goes on; Jupyter repeats the request
 *       every second until it is answered.
 * </ol>
 * Everything else is as in 3.0.1: run the body, sleep, until shut down or interrupted.
 */
public final class LoopThread extends Thread {

    private volatile boolean running = false;
    private final long sleep;
    private final Runnable loopBody;

    public LoopThread(String name, long sleep, Runnable loopBody) {
        super(name);
        this.sleep = sleep;
        this.loopBody = loopBody;
    }

    @Override
    public void run() {
        while (running) {
            try {
                loopBody.run();
            } catch (RuntimeException e) {
                System.err.println(getName() + ": " + e + " (the channel goes on)");
            }
            try {
                Thread.sleep(sleep);
            } catch (InterruptedException e) {
                running = false;
            }
        }
    }

    @Override
    public synchronized void start() {
        running = true; // before the thread can look at it
        super.start();
    }

    public void shutdown() {
        running = false;
    }
}
