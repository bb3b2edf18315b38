package org.djlmegatron.comm;

/** Element-wise reductions a collective can apply. */
public enum ReduceOp {
    SUM,
    AVG,
    MAX,
    MIN
}
