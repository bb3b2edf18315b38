package org.djlmegatron.comm;

/**
 * A collective that stopped because its group was aborted (a failure elsewhere): {@link #where}
 * names the group, rank and operation it was in, the message adds the reason.
 */
public class CollectiveAbortedException extends CollectiveException {

    private static final long serialVersionUID = 1L;

    private final String where;

    public CollectiveAbortedException(String where, String reason) {
        super(where + ": aborted: " + reason);
        this.where = where;
    }

    /** E.g. {@code "group pp[0,1]: rank 0 (global 0) recv"}. */
    public String where() {
        return where;
    }
}
