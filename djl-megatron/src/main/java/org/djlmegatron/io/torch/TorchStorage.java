package org.djlmegatron.io.torch;

import org.djlmegatron.io.SafetensorsDType;

/**
 * A storage a torch.save archive refers to by persistent id: entry {@code data/<key>} holding
 * {@code numel} elements.
 *
 * @param key the storage key (the entry name under {@code data/})
 * @param dtype element type, from the storage class
 * @param numel elements the persistent id declares
 */
public record TorchStorage(String key, SafetensorsDType dtype, long numel) {}
