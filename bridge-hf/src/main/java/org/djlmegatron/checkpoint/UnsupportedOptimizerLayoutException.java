package org.djlmegatron.checkpoint;

import org.djlmegatron.bridge.convert.CheckpointException;

/** An optimizer-state file whose layout version this build cannot read. */
public final class UnsupportedOptimizerLayoutException extends CheckpointException {

    private static final long serialVersionUID = 1L;

    public UnsupportedOptimizerLayoutException(String message) {
        super(message);
    }
}
