"""Cloze (masked-item) training samples for BERT4Rec, built in numpy per epoch."""

from __future__ import annotations

import math

import numpy as np

from edgerec.vocab import PAD_ID


def cloze_epoch(
    sequences: list[np.ndarray],
    max_len: int,
    mask_id: int,
    mask_prob: float,
    last_item_mask_prob: float,
    windows_per_length: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of masked training windows.

    Each user contributes ``ceil(len / max_len * windows_per_length)`` windows of
    up to ``max_len`` consecutive items: the most recent window always, the others
    ending at random positions. In each window every item is replaced by
    ``[MASK]`` with probability ``mask_prob`` (at least one per window); a share
    ``last_item_mask_prob`` of windows masks only the last item, which is exactly
    the inference situation.

    Returns:
        ``inputs`` ``[N, max_len]`` int32 (left-padded) and ``labels``
        ``[N, max_len]`` int32 holding the original item at masked positions and
        ``PAD_ID`` (0) elsewhere.
    """
    ends: list[tuple[int, int]] = []
    for u, seq in enumerate(sequences):
        length = len(seq)
        if length == 0:
            continue
        count = max(1, math.ceil(length / max_len * windows_per_length))
        ends.append((u, length))
        if count > 1 and length > 1:
            for e in rng.integers(1, length, size=count - 1):
                ends.append((u, int(e)))
    n = len(ends)
    windows = np.full((n, max_len), PAD_ID, np.int32)
    for row, (u, end) in enumerate(ends):
        seq = sequences[u]
        part = seq[max(0, end - max_len) : end]
        windows[row, max_len - len(part) :] = part
    real = windows != PAD_ID
    masked = (rng.random(windows.shape) < mask_prob) & real
    last_only = rng.random(n) < last_item_mask_prob
    masked[last_only] = False
    masked[last_only, -1] = True
    # every window needs at least one masked position: mask its last item
    empty = ~masked.any(axis=1)
    masked[empty, -1] = True
    labels = np.where(masked, windows, PAD_ID).astype(np.int32)
    inputs = np.where(masked, mask_id, windows).astype(np.int32)
    order = rng.permutation(n)
    return inputs[order], labels[order]
