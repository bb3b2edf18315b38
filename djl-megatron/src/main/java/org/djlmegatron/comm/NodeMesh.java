package org.djlmegatron.comm;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.net.Socket;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * This JVM's TCP links to every other node of the world, one socket per pair (made by
 * {@link Rendezvous}). Each link has a writer thread that drains a queue of frames, so senders
 * never block on the network, and a reader thread that hands every incoming frame to the
 * {@link Listener}. A link that breaks before its peer said {@link Frame.Done} is reported as
 * lost.
 *
 * <p>Public only for the launcher ({@code org.djlmegatron.launch.DistributedWorld}), which sits above
 * the rank grid and so outside this package; not an API for model code.
 */
public final class NodeMesh {

    /** Receives what arrives on the links; called from the reader threads. */
    public interface Listener {
        void onContribution(int node, Frame.Contribution frame);

        void onMessage(int node, Frame.Message frame);

        void onAbort(int node, String reason);

        void onDone(int node);

        /** The link to {@code node} broke (the peer died, or the network failed). */
        void onLost(int node, String reason);
    }

    /** Ends a writer: flush, then half-close the socket. */
    private static final Frame END = new Frame.Done();

    private final int self;
    private final Link[] links;
    private final String[] names;

    /**
     * @param self this JVM's node rank
     * @param sockets per node rank, the connected socket (null at {@code self})
     * @param addresses per node rank, the peer's address for messages (any value at self)
     */
    public NodeMesh(int self, Socket[] sockets, String[] addresses) {
        this.self = self;
        this.links = new Link[sockets.length];
        this.names = new String[sockets.length];
        for (int node = 0; node < sockets.length; node++) {
            names[node] = "node " + node + (node == self ? "" : " (" + addresses[node] + ")");
            if (node != self) {
                links[node] = new Link(node, sockets[node]);
            }
        }
    }

    int self() {
        return self;
    }

    /** E.g. {@code "node 1 (127.0.0.1:40211)"}. */
    public String describe(int node) {
        return names[node];
    }

    /** Starts the reader and writer threads. */
    public void start(Listener listener) {
        for (Link link : links) {
            if (link != null) {
                link.start(listener);
            }
        }
    }

    /** Queues {@code frame} for {@code node}; never blocks. */
    void send(int node, Frame frame) {
        links[node].queue.add(frame);
    }

    /** Drops everything queued for the other nodes and sends them {@code frame} next. */
    public void sendUrgently(Frame frame) {
        for (Link link : links) {
            if (link != null) {
                link.queue.clear();
                link.queue.add(frame);
            }
        }
    }

    /** Queues {@code frame} for every other node. */
    public void sendToAll(Frame frame) {
        for (Link link : links) {
            if (link != null) {
                link.queue.add(frame);
            }
        }
    }

    /**
     * Sends what is queued, half-closes every link and waits (at most {@code graceMillis}) for
     * the peers to close theirs, so nothing in flight is lost to a reset; then closes.
     */
    public void close(long graceMillis) {
        for (Link link : links) {
            if (link != null) {
                link.closing = true;
                link.queue.add(END);
            }
        }
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(graceMillis);
        for (Link link : links) {
            if (link != null) {
                try {
                    link.ended.await(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    break;
                }
            }
        }
        for (Link link : links) {
            if (link != null) {
                link.closeSocket();
            }
        }
    }

    /** One peer: its socket and the threads that write and read it. */
    private final class Link {
        final int node;
        final Socket socket;
        final LinkedBlockingQueue<Frame> queue = new LinkedBlockingQueue<>();
        /** Counted down when the reader stops (end of stream or error). */
        final CountDownLatch ended = new CountDownLatch(1);
        volatile boolean closing;
        /** The peer said Done or Abort: the end of its stream is expected. */
        volatile boolean peerFinished;

        Link(int node, Socket socket) {
            this.node = node;
            this.socket = socket;
        }

        void start(Listener listener) {
            Thread writer = new Thread(() -> write(listener), "link-" + self + "-to-" + node);
            Thread reader = new Thread(() -> read(listener), "link-" + self + "-from-" + node);
            writer.setDaemon(true);
            reader.setDaemon(true);
            writer.start();
            reader.start();
        }

        private void write(Listener listener) {
            try {
                DataOutputStream out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream(), 1 << 16));
                while (true) {
                    Frame frame = queue.take();
                    if (frame == END) {
                        out.flush();
                        socket.shutdownOutput();
                        return;
                    }
                    frame.write(out);
                    if (queue.isEmpty()) {
                        out.flush();
                    }
                }
            } catch (IOException e) {
                if (!closing) {
                    listener.onLost(node, "lost connection to " + describe(node) + ": cannot write: "
                            + e.getMessage() + " (did its process exit?)");
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }

        private void read(Listener listener) {
            try {
                DataInputStream in = new DataInputStream(new BufferedInputStream(socket.getInputStream(), 1 << 16));
                while (true) {
                    Frame frame = Frame.read(in);
                    if (frame instanceof Frame.Contribution c) {
                        listener.onContribution(node, c);
                    } else if (frame instanceof Frame.Message m) {
                        listener.onMessage(node, m);
                    } else if (frame instanceof Frame.Abort a) {
                        peerFinished = true; // the end of the stream follows
                        listener.onAbort(node, a.reason());
                    } else if (frame instanceof Frame.Done) {
                        peerFinished = true;
                        listener.onDone(node);
                    }
                }
            } catch (EOFException e) {
                if (!peerFinished) {
                    listener.onLost(node, "lost connection to " + describe(node)
                            + ": it closed the connection before finishing (did its process exit?)");
                }
            } catch (IOException | RuntimeException e) {
                if (!peerFinished && !(closing && socket.isClosed())) {
                    listener.onLost(node, "lost connection to " + describe(node) + ": " + e.getMessage()
                            + " (did its process exit?)");
                }
            } finally {
                ended.countDown();
            }
        }

        void closeSocket() {
            closing = true;
            try {
                socket.close();
            } catch (IOException e) {
                // nothing left to do with it
            }
        }
    }
}
