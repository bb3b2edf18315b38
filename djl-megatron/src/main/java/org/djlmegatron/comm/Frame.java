package org.djlmegatron.comm;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * What travels on a link between two JVMs once the rendezvous is done. Each frame starts with a
 * one-byte type; integers are big-endian; strings are a length and UTF-8 bytes.
 *
 * <p>Public only for the launcher ({@code org.djlmegatron.launch.DistributedWorld}), which sits above
 * the rank grid and so outside this package; not an API for model code.
 */
public sealed interface Frame {

    byte CONTRIBUTION = 1;
    byte MESSAGE = 2;
    byte ABORT = 3;
    byte DONE = 4;

    /** Longest string a frame carries (longer error messages are cut). */
    int MAX_STRING = 1 << 16;

    void write(DataOutputStream out) throws IOException;

    /**
     * A sender's part in one collective call of a group, for the receivers on one node: its call
     * signature (checked against everybody's) and the pieces those receivers need.
     *
     * @param group the group's id, the same on every node
     * @param call the sender's call sequence number in that group
     * @param sender the sender's group rank
     * @param pieces the pieces for receivers on the destination node, possibly none
     */
    record Contribution(int group, long call, int sender, String signature, List<Piece> pieces)
            implements Frame {
        @Override
        public void write(DataOutputStream out) throws IOException {
            out.writeByte(CONTRIBUTION);
            out.writeInt(group);
            out.writeLong(call);
            out.writeInt(sender);
            writeString(out, signature);
            out.writeInt(pieces.size());
            for (Piece p : pieces) {
                out.writeInt(p.receiver());
                p.tensor().write(out);
            }
        }
    }

    /** A piece for group rank {@code receiver}, or for every receiver when it is {@link #EVERYONE}. */
    record Piece(int receiver, WireTensor tensor) {
        static final int EVERYONE = -1;
    }

    /** A point-to-point message between two members of a group. */
    record Message(int group, int sender, int receiver, WireTensor tensor) implements Frame {
        @Override
        public void write(DataOutputStream out) throws IOException {
            out.writeByte(MESSAGE);
            out.writeInt(group);
            out.writeInt(sender);
            out.writeInt(receiver);
            tensor.write(out);
        }
    }

    /** The sending node failed: every group fails with {@code reason}. */
    record Abort(String reason) implements Frame {
        @Override
        public void write(DataOutputStream out) throws IOException {
            out.writeByte(ABORT);
            writeString(out, reason);
        }
    }

    /** The sending node's ranks all finished; the end of the stream that follows is expected. */
    record Done() implements Frame {
        @Override
        public void write(DataOutputStream out) throws IOException {
            out.writeByte(DONE);
        }
    }

    /** Reads one frame; {@link java.io.EOFException} at the end of the stream. */
    static Frame read(DataInputStream in) throws IOException {
        byte type = in.readByte();
        switch (type) {
            case CONTRIBUTION -> {
                int group = in.readInt();
                long call = in.readLong();
                int sender = in.readInt();
                String signature = readString(in);
                int count = in.readInt();
                if (count < 0 || count > 1 << 20) {
                    throw new IOException("corrupt frame: " + count + " pieces");
                }
                List<Piece> pieces = new ArrayList<>(count);
                for (int i = 0; i < count; i++) {
                    int receiver = in.readInt();
                    pieces.add(new Piece(receiver, WireTensor.read(in)));
                }
                return new Contribution(group, call, sender, signature, pieces);
            }
            case MESSAGE -> {
                return new Message(in.readInt(), in.readInt(), in.readInt(), WireTensor.read(in));
            }
            case ABORT -> {
                return new Abort(readString(in));
            }
            case DONE -> {
                return new Done();
            }
            default -> throw new IOException("corrupt stream: unknown frame type " + type);
        }
    }

    static void writeString(DataOutputStream out, String s) throws IOException {
        byte[] bytes = s.getBytes(StandardCharsets.UTF_8);
        if (bytes.length > MAX_STRING) {
            bytes = Arrays.copyOf(bytes, MAX_STRING);
        }
        out.writeInt(bytes.length);
        out.write(bytes);
    }

    static String readString(DataInputStream in) throws IOException {
        int length = in.readInt();
        if (length < 0 || length > MAX_STRING) {
            throw new IOException("corrupt stream: string of " + length + " bytes");
        }
        byte[] bytes = new byte[length];
        in.readFully(bytes);
        return new String(bytes, StandardCharsets.UTF_8);
    }
}
