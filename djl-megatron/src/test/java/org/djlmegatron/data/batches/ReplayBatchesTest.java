package org.djlmegatron.data.batches;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.djlmegatron.data.InvalidDataException;
import org.djlmegatron.io.SafetensorsWriter;
import org.djlmegatron.training.model.MicroBatch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Replayed rows may carry Megatron's pad id (-1): as a label it stays negative (the loss ignores
 * it), as an input it reads token 0; any other id outside the vocabulary is refused.
 */
class ReplayBatchesTest {

    @TempDir
    Path tmp;

    @Test
    void padIsAnIgnoredLabelAndInputZero() {
        ReplayBatches source = replay(new long[] {7, 8, 9, -1, 4, 5, -1, -1});
        List<MicroBatch> mbs = source.microBatches(0, 0, 1, 2, 2);
        assertThat(mbs).hasSize(1);
        MicroBatch mb = mbs.get(0);
        assertThat(mb.seq()).isEqualTo(3);
        assertThat(mb.inputs()).containsExactly(7, 8, 9, 4, 5, 0);
        assertThat(mb.labels()).containsExactly(8, 9, -1, 5, -1, -1);
    }

    @Test
    void otherNegativeIdsAreRefused() {
        ReplayBatches source = replay(new long[] {7, 8, 9, -2, 4, 5, 6, 7});
        assertThatThrownBy(() -> source.microBatches(0, 0, 1, 2, 2)).isInstanceOf(InvalidDataException.class)
                .hasMessageContaining("token id -2").hasMessageContaining("batches.safetensors");
    }

    private ReplayBatches replay(long[] tokens) {
        Path file = tmp.resolve("batches.safetensors");
        try (NDManager m = NDManager.newBaseManager()) {
            SafetensorsWriter.write(file, Map.of("train_batches", m.create(tokens, new Shape(1, 2, 4))), Map.of());
        }
        ReplayBatches source = new ReplayBatches(file, "train_batches");
        source.limitTokens(16, "--replay-batches " + file);
        return source;
    }
}
