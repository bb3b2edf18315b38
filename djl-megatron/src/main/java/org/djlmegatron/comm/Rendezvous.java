package org.djlmegatron.comm;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.util.ArrayList;
import java.util.List;
import java.util.StringJoiner;
import java.util.concurrent.TimeUnit;

/**
 * Brings the nodes of a {@link LaunchConfig} together and leaves a socket between every pair.
 *
 * <ol>
 *   <li>Node 0 listens on {@code masterPort} (every interface). Every other node opens a listener
 *       of its own on a free port, then connects to {@code masterAddr:masterPort} (retrying until
 *       the timeout) and says hello: protocol version, run id, job description (the grid),
 *       number of nodes, ranks per node, its node rank and its listener's port.
 *   <li>Node 0 checks every hello against its own settings (duplicate node ranks, other world
 *       sizes, other nproc, other run id or grid are errors) and, once all nodes have joined,
 *       answers each with the table of every node's address (as node 0 saw it) and port.
 *   <li>Nodes connect to each other: the higher node rank connects to the lower one's listener
 *       (node 0's links are the rendezvous connections themselves) and says who it is.
 *   <li>Each node reports to node 0 that its links are up (or why not); node 0 answers everybody
 *       "go", or the first failure.
 * </ol>
 * Every wait is bounded by one deadline, {@code timeout} after the start (a node waits for node
 * 0's verdict up to 5 s longer, so that node 0's reason reaches it first). On any failure node 0
 * tells every node it knows of and keeps answering late arrivals with the error until the
 * deadline, so every node fails with the same clear message instead of waiting.
 *
 * <p>Public only for the launcher ({@code org.djlmegatron.launch.DistributedWorld}), which sits above
 * the rank grid and so outside this package; not an API for model code.
 */
public final class Rendezvous {

    private static final int MAGIC = 0x444A4C4D; // "DJLM"
    private static final int VERSION = 1;
    private static final byte HELLO = 1;
    private static final byte TABLE = 2;
    private static final byte ERROR = 3;
    private static final byte PEER_HELLO = 4;
    private static final byte READY = 5;
    private static final byte GO = 6;

    private final LaunchConfig launch;
    private final String job;
    private final long deadline;

    /** The links of one node: per node rank, a connected socket (null at self) and a description. */
    public record Links(Socket[] sockets, String[] addresses) {}

    private Rendezvous(LaunchConfig launch, String job) {
        this.launch = launch;
        this.job = job;
        this.deadline = System.nanoTime() + launch.timeout().toNanos();
    }

    /**
     * Joins the world described by {@code launch}; {@code job} describes the work (e.g. the rank
     * grid) and must be the same on every node.
     *
     * @return a connected socket to every other node
     * @throws CollectiveException saying what failed, on every node
     */
    public static Links join(LaunchConfig launch, String job) {
        if (launch.nnodes() == 1) {
            return new Links(new Socket[1], new String[] {"self"});
        }
        Rendezvous r = new Rendezvous(launch, job);
        return launch.nodeRank() == 0 ? r.master() : r.worker();
    }

    // ---------------------------------------------------------------- node 0

    private record Hello(int nodeRank, int nproc, int nnodes, String runId, String job, int port) {}

    private Links master() {
        int n = launch.nnodes();
        ServerSocket server;
        try {
            server = new ServerSocket();
            server.setReuseAddress(true);
            server.bind(new InetSocketAddress(launch.masterPort()));
        } catch (IOException e) {
            throw failure("node 0 cannot listen on MASTER_PORT=" + launch.masterPort()
                    + " (is another node 0 or another job using it?): " + e.getMessage(), e);
        }
        Socket[] sockets = new Socket[n];
        String[] hosts = new String[n];
        int[] ports = new int[n];
        hosts[0] = launch.masterAddr();
        ports[0] = launch.masterPort();
        List<Socket> connected = new ArrayList<>();
        int joined = 1;
        try {
            while (joined < n) {
                Socket s;
                try {
                    server.setSoTimeout(remainingMillis());
                    s = server.accept();
                } catch (SocketTimeoutException e) {
                    throw new RendezvousError("timed out after " + launch.timeout().toMillis()
                            + " ms waiting for node(s) " + missing(sockets) + " of " + n
                            + " to join at port " + launch.masterPort() + " (joined: " + present(sockets) + ")");
                }
                connected.add(s);
                Hello hello;
                try {
                    hello = readHello(s);
                } catch (IOException e) {
                    // not one of ours (a port scan, a dead client): ignore it
                    closeQuietly(s);
                    connected.remove(s);
                    continue;
                }
                String from = s.getInetAddress().getHostAddress() + ":" + s.getPort();
                String problem = check(hello, from, sockets);
                if (problem != null) {
                    throw new RendezvousError(problem);
                }
                sockets[hello.nodeRank()] = s;
                hosts[hello.nodeRank()] = s.getInetAddress().getHostAddress();
                ports[hello.nodeRank()] = hello.port();
                joined++;
            }
            for (int k = 1; k < n; k++) {
                DataOutputStream out = output(sockets[k]);
                out.writeByte(TABLE);
                out.writeInt(n);
                for (int j = 0; j < n; j++) {
                    Frame.writeString(out, hosts[j]);
                    out.writeInt(ports[j]);
                }
                out.flush();
            }
            // every node reports its links (or why not); the first failure fails everyone
            for (int k = 1; k < n; k++) {
                DataInputStream in = input(sockets[k]);
                sockets[k].setSoTimeout(remainingMillis());
                byte type;
                try {
                    type = in.readByte();
                } catch (SocketTimeoutException e) {
                    throw new RendezvousError("timed out after " + launch.timeout().toMillis()
                            + " ms waiting for node " + k + " to connect to its peers");
                }
                if (type == ERROR) {
                    throw new RendezvousError("node " + k + ": " + Frame.readString(in));
                } else if (type != READY) {
                    throw new RendezvousError("node " + k + " broke the protocol (message " + type + ")");
                }
            }
            for (int k = 1; k < n; k++) {
                DataOutputStream out = output(sockets[k]);
                out.writeByte(GO);
                out.flush();
            }
            closeQuietly(server);
            String[] addresses = new String[n];
            for (int k = 0; k < n; k++) {
                addresses[k] = hosts[k] + ":" + ports[k];
            }
            return new Links(linked(sockets), addresses);
        } catch (RendezvousError e) {
            String message = e.getMessage();
            tellAll(connected, message);
            answerLateArrivals(server, message);
            throw failure(message, null);
        } catch (IOException e) {
            String message = "node 0 lost a node during the rendezvous: " + describe(e);
            tellAll(connected, message);
            answerLateArrivals(server, message);
            throw failure(message, e);
        }
    }

    private Hello readHello(Socket s) throws IOException {
        s.setSoTimeout(Math.min(remainingMillis(), 10_000));
        DataInputStream in = input(s);
        if (in.readInt() != MAGIC) {
            throw new IOException("not a djl-megatron node");
        }
        int version = in.readInt();
        if (version != VERSION) {
            throw new IOException("protocol version " + version);
        }
        if (in.readByte() != HELLO) {
            throw new IOException("expected a hello");
        }
        int nodeRank = in.readInt();
        int nproc = in.readInt();
        int nnodes = in.readInt();
        String runId = Frame.readString(in);
        String job = Frame.readString(in);
        int port = in.readInt();
        return new Hello(nodeRank, nproc, nnodes, runId, job, port);
    }

    /** What is wrong with {@code hello} from {@code from}, or null. */
    private String check(Hello hello, String from, Socket[] sockets) {
        String who = "the node at " + from + " (node rank " + hello.nodeRank() + ")";
        if (!hello.runId().equals(launch.runId())) {
            return who + " belongs to run '" + hello.runId() + "' but node 0 to run '" + launch.runId() + "'";
        }
        if (hello.nnodes() != launch.nnodes()) {
            return who + " expects " + hello.nnodes() + " nodes but node 0 expects " + launch.nnodes()
                    + " (check NNODES / WORLD_SIZE on every node)";
        }
        if (hello.nproc() != launch.nprocPerNode()) {
            return who + " runs " + hello.nproc() + " ranks per node but node 0 runs " + launch.nprocPerNode()
                    + " (every node must use the same nproc-per-node)";
        }
        if (!hello.job().equals(job)) {
            return who + " runs " + hello.job() + " but node 0 runs " + job;
        }
        if (hello.nodeRank() == 0) {
            return who + " also claims node rank 0 (check NODE_RANK / RANK on every node)";
        }
        if (hello.nodeRank() < 0 || hello.nodeRank() >= launch.nnodes()) {
            return who + " has a node rank outside 0.." + (launch.nnodes() - 1);
        }
        Socket other = sockets[hello.nodeRank()];
        if (other != null) {
            return "two nodes claim node rank " + hello.nodeRank() + ": "
                    + other.getInetAddress().getHostAddress() + ":" + other.getPort() + " and " + from
                    + " (check NODE_RANK / RANK on every node)";
        }
        return null;
    }

    private static void tellAll(List<Socket> sockets, String message) {
        for (Socket s : sockets) {
            try {
                DataOutputStream out = output(s);
                out.writeByte(ERROR);
                Frame.writeString(out, message);
                out.flush();
                s.shutdownOutput();
            } catch (IOException e) {
                // that node will see the connection close
            }
        }
        // closing at once could reset the connection before the message is read
        Thread closer = new Thread(() -> {
            sleepQuietly(2_000);
            sockets.forEach(Rendezvous::closeQuietly);
        }, "rendezvous-closer");
        closer.setDaemon(true);
        closer.start();
    }

    /** Until the deadline, answers every node that still arrives with the failure. */
    private void answerLateArrivals(ServerSocket server, String message) {
        Thread t = new Thread(() -> {
            try (server) {
                while (remainingMillis() > 1) {
                    server.setSoTimeout(remainingMillis());
                    Socket s = server.accept();
                    tellAll(List.of(s), message);
                }
            } catch (IOException e) {
                // deadline reached or closed
            }
        }, "rendezvous-late-answers");
        t.setDaemon(true);
        t.start();
    }

    // ---------------------------------------------------------------- other nodes

    private Links worker() {
        int n = launch.nnodes();
        int self = launch.nodeRank();
        ServerSocket peers;
        try {
            peers = new ServerSocket();
            peers.bind(new InetSocketAddress(0));
        } catch (IOException e) {
            throw failure("node " + self + " cannot open a port for its peers: " + e.getMessage(), e);
        }
        Socket master = null;
        Socket[] sockets = new Socket[n];
        List<Socket> opened = new ArrayList<>();
        try (peers) {
            master = connectToMaster();
            opened.add(master);
            DataOutputStream out = output(master);
            out.writeInt(MAGIC);
            out.writeInt(VERSION);
            out.writeByte(HELLO);
            out.writeInt(self);
            out.writeInt(launch.nprocPerNode());
            out.writeInt(launch.nnodes());
            Frame.writeString(out, launch.runId());
            Frame.writeString(out, job);
            out.writeInt(peers.getLocalPort());
            out.flush();

            DataInputStream in = input(master);
            byte type = readFromMaster(master, in, "report that all " + n + " nodes joined");
            if (type != TABLE || in.readInt() != n) {
                throw failure("node " + self + ": the master at " + masterName() + " broke the protocol", null);
            }
            String[] hosts = new String[n];
            int[] ports = new int[n];
            for (int j = 0; j < n; j++) {
                hosts[j] = Frame.readString(in);
                ports[j] = in.readInt();
            }
            sockets[0] = master;
            String linkProblem = null;
            try {
                for (int j = 1; j < self; j++) {
                    Socket s = connect(hosts[j], ports[j], "node " + j);
                    opened.add(s);
                    DataOutputStream o = output(s);
                    o.writeInt(MAGIC);
                    o.writeByte(PEER_HELLO);
                    Frame.writeString(o, launch.runId());
                    o.writeInt(self);
                    o.flush();
                    sockets[j] = s;
                }
                for (int accepted = self + 1; accepted < n; accepted++) {
                    peers.setSoTimeout(remainingMillis());
                    Socket s = peers.accept();
                    opened.add(s);
                    s.setSoTimeout(remainingMillis());
                    DataInputStream i = input(s);
                    if (i.readInt() != MAGIC || i.readByte() != PEER_HELLO) {
                        throw new IOException("a stranger connected from " + s.getRemoteSocketAddress());
                    }
                    String runId = Frame.readString(i);
                    int peer = i.readInt();
                    if (!runId.equals(launch.runId()) || peer <= self || peer >= n || sockets[peer] != null) {
                        throw new IOException("unexpected peer hello (run '" + runId + "', node " + peer
                                + ") from " + s.getRemoteSocketAddress());
                    }
                    sockets[peer] = s;
                }
            } catch (SocketTimeoutException e) {
                linkProblem = "timed out after " + launch.timeout().toMillis()
                        + " ms waiting for its peers to connect (linked to: " + present(sockets) + ")";
            } catch (IOException e) {
                linkProblem = "cannot link to its peers: " + e.getMessage();
            } catch (CollectiveException e) {
                linkProblem = e.getMessage().replaceFirst("^rendezvous failed: ", "");
            }
            if (linkProblem != null) {
                out.writeByte(ERROR);
                Frame.writeString(out, linkProblem);
            } else {
                out.writeByte(READY);
            }
            out.flush();
            type = readFromMaster(master, in, "say go");
            if (type != GO) {
                throw failure("node " + self + ": the master at " + masterName() + " broke the protocol", null);
            }
            String[] addresses = new String[n];
            for (int j = 0; j < n; j++) {
                addresses[j] = hosts[j] + ":" + ports[j];
            }
            return new Links(linked(sockets), addresses);
        } catch (CollectiveException e) {
            opened.forEach(Rendezvous::closeQuietly);
            throw e;
        } catch (IOException e) {
            opened.forEach(Rendezvous::closeQuietly);
            throw failure("node " + self + " lost the master at " + masterName() + " during the rendezvous: "
                    + describe(e), e);
        }
    }

    /** Reads the master's next message type; an ERROR becomes the failure it reports. */
    private byte readFromMaster(Socket master, DataInputStream in, String waitingFor) throws IOException {
        try {
            // a little past our own deadline: the master judges the join, and it may have started
            // a moment after us; its verdict names the missing node, our timeout could not
            master.setSoTimeout(remainingMillis() + verdictGraceMillis());
            byte type = in.readByte();
            if (type == ERROR) {
                throw failure(Frame.readString(in), null);
            }
            return type;
        } catch (SocketTimeoutException e) {
            throw failure("node " + launch.nodeRank() + " timed out after " + launch.timeout().toMillis()
                    + " ms waiting for the master at " + masterName() + " to " + waitingFor, e);
        }
    }

    /** How long past its deadline a node waits for the master's verdict. */
    private int verdictGraceMillis() {
        return (int) Math.min(5_000, launch.timeout().toMillis());
    }

    private Socket connectToMaster() {
        return connect(launch.masterAddr(), launch.masterPort(), "the master");
    }

    /** Connects to {@code host:port}, retrying until the deadline. */
    private Socket connect(String host, int port, String what) {
        IOException last = null;
        long pause = 20;
        while (true) {
            int left = remainingMillis();
            if (left <= 1) {
                String name = what.equals("the master") ? masterName() : what + " at " + host + ":" + port;
                throw failure("node " + launch.nodeRank() + " could not reach " + name + " within "
                        + launch.timeout().toMillis() + " ms" + (last == null ? "" : ": " + last.getMessage()), last);
            }
            Socket s = new Socket();
            try {
                s.connect(new InetSocketAddress(host, port), left);
                s.setTcpNoDelay(true);
                return s;
            } catch (IOException e) {
                last = e;
                closeQuietly(s);
                sleepQuietly(Math.min(pause, Math.max(1, remainingMillis())));
                pause = Math.min(500, pause * 2);
            }
        }
    }

    private String masterName() {
        return launch.masterAddr() + ":" + launch.masterPort() + " (MASTER_ADDR:MASTER_PORT)";
    }

    // ---------------------------------------------------------------- helpers

    /** A failure the master reports to every node. */
    private static final class RendezvousError extends Exception {
        private static final long serialVersionUID = 1L;

        RendezvousError(String message) {
            super(message);
        }
    }

    private CollectiveException failure(String message, Throwable cause) {
        String m = message.startsWith("rendezvous failed: ") ? message : "rendezvous failed: " + message;
        return cause == null ? new CollectiveException(m) : new CollectiveException(m, cause);
    }

    /** Sockets ready for the links: blocking reads without a timeout, no Nagle delay. */
    private static Socket[] linked(Socket[] sockets) {
        for (Socket s : sockets) {
            if (s != null) {
                try {
                    s.setSoTimeout(0);
                    s.setTcpNoDelay(true);
                    s.setKeepAlive(true);
                } catch (IOException e) {
                    // the link's reader will report a broken socket
                }
            }
        }
        return sockets;
    }

    private int remainingMillis() {
        long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
        return (int) Math.max(1, Math.min(Integer.MAX_VALUE, left));
    }

    private static DataOutputStream output(Socket s) throws IOException {
        return new DataOutputStream(new BufferedOutputStream(s.getOutputStream()));
    }

    private static DataInputStream input(Socket s) throws IOException {
        // unbuffered: the stream is read again later (by the link), nothing may be read ahead
        return new DataInputStream(s.getInputStream());
    }

    private static String missing(Socket[] sockets) {
        StringJoiner j = new StringJoiner(", ");
        for (int k = 1; k < sockets.length; k++) {
            if (sockets[k] == null) {
                j.add(Integer.toString(k));
            }
        }
        return j.toString();
    }

    private static String present(Socket[] sockets) {
        StringJoiner j = new StringJoiner(", ");
        for (int k = 0; k < sockets.length; k++) {
            if (k == 0 || sockets[k] != null) {
                j.add(Integer.toString(k));
            }
        }
        return j.toString();
    }

    private static String describe(IOException e) {
        return e instanceof java.io.EOFException ? "connection closed" : e.toString();
    }

    private static void closeQuietly(AutoCloseable c) {
        try {
            c.close();
        } catch (Exception e) {
            // nothing left to do
        }
    }

    private static void sleepQuietly(long millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
