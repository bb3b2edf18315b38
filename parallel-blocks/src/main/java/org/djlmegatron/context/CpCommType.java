package org.djlmegatron.context;

import java.util.Locale;

/** How context-parallel attention exchanges keys and values ({@code --cp-comm-type}, Megatron's names). */
public enum CpCommType {
    /** Ring attention: K/V blocks passed around the context-parallel ring, partial results merged by log-sum-exp. */
    P2P,
    /** Every rank all-gathers the whole sequence's K/V. */
    ALL_GATHER,
    /** Ulysses: an all-to-all trades the sequence split for a head split around attention. */
    A2A;

    /** Parses Megatron's spelling ({@code p2p}, {@code all_gather}, {@code a2a}). */
    public static CpCommType parse(String flag) {
        for (CpCommType t : values()) {
            if (t.flag().equals(flag)) {
                return t;
            }
        }
        throw new IllegalArgumentException("--cp-comm-type must be p2p, all_gather or a2a, found '" + flag + "'");
    }

    public String flag() {
        return name().toLowerCase(Locale.ROOT);
    }
}
