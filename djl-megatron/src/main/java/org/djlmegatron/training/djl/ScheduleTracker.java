package org.djlmegatron.training.djl;

import ai.djl.training.tracker.Tracker;
import org.djlmegatron.optim.LearningRateSchedule;

/**
 * Megatron's learning-rate schedule ({@code --lr-warmup-*}, {@code --lr-decay-style}, ...) as a
 * DJL {@link Tracker}: {@link #getNewValue} is the rate of update {@code numUpdate}, as
 * {@link LearningRateSchedule#lr} gives it to the distributed step.
 */
public final class ScheduleTracker implements Tracker {

    private final LearningRateSchedule schedule;

    public ScheduleTracker(LearningRateSchedule schedule) {
        this.schedule = schedule;
    }

    /** The schedule the distributed step applies. */
    public LearningRateSchedule schedule() {
        return schedule;
    }

    @Override
    public float getNewValue(int numUpdate) {
        return (float) schedule.lr(numUpdate);
    }
}
