"""Training samples built in numpy per epoch: Cloze (masked items) for BERT4Rec and
next-item windows for the causal SASRec."""

from __future__ import annotations

import math

import numpy as np

from edgerec.vocab import PAD_ID


def _window_ends(
    sequences: list[np.ndarray], max_len: int, windows_per_length: float, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """``(user, end)`` of each window: the most recent always, the others at random ends."""
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
    return ends


def causal_epoch(
    sequences: list[np.ndarray],
    max_len: int,
    mask_id: int,
    windows_per_length: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of next-item windows for a causal model, in the inference row form.

    A window of ``m <= max_len`` consecutive items ``w`` becomes the row
    ``[pad..., w[0], ..., w[m-2], MASK]`` with label ``w[t + 1]`` at the position of
    ``w[t]`` (``PAD_ID`` elsewhere, also at the trailing ``[MASK]``): every real
    position is trained on the item that followed it, and position ``max_len - 2``
    is exactly where inference reads the next item. Windows are chosen as in
    :func:`cloze_epoch`; single-item windows carry no target and are dropped.
    """
    ends = [(u, e) for u, e in _window_ends(sequences, max_len, windows_per_length, rng) if e > 1]
    n = len(ends)
    inputs = np.full((n, max_len), PAD_ID, np.int32)
    labels = np.full((n, max_len), PAD_ID, np.int32)
    inputs[:, -1] = mask_id
    for row, (u, end) in enumerate(ends):
        part = sequences[u][max(0, end - max_len) : end]
        m = len(part)
        inputs[row, max_len - m : max_len - 1] = part[:-1]
        labels[row, max_len - m : max_len - 1] = part[1:]
    order = rng.permutation(n)
    return inputs[order], labels[order]


def cloze_epoch(
    sequences: list[np.ndarray],
    max_len: int,
    mask_id: int,
    mask_prob: float,
    last_item_mask_prob: float,
    windows_per_length: float,
    rng: np.random.Generator,
    min_masked: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of masked training windows.

    Each user contributes ``ceil(len / max_len * windows_per_length)`` windows of
    up to ``max_len`` consecutive items: the most recent window always, the others
    ending at random positions. In each window every item is replaced by
    ``[MASK]`` with probability ``mask_prob`` (at least one per window); a share
    ``last_item_mask_prob`` of windows masks only the last item, which is exactly
    the inference situation. ``min_masked`` > 1 raises the floor: a window of ``r``
    real items has at least ``min(min_masked, ceil(r / 2))`` masked positions (extra
    ones drawn at random), so logs of short sequences still give each step enough
    targets; 1 draws exactly what it always did.

    Returns:
        ``inputs`` ``[N, max_len]`` int32 (left-padded) and ``labels``
        ``[N, max_len]`` int32 holding the original item at masked positions and
        ``PAD_ID`` (0) elsewhere.
    """
    ends = _window_ends(sequences, max_len, windows_per_length, rng)
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
    if min_masked > 1:
        _raise_mask_floor(masked, real, ~last_only, min_masked, rng)
    labels = np.where(masked, windows, PAD_ID).astype(np.int32)
    inputs = np.where(masked, mask_id, windows).astype(np.int32)
    order = rng.permutation(n)
    return inputs[order], labels[order]


def _raise_mask_floor(
    masked: np.ndarray, real: np.ndarray, rows: np.ndarray, floor: int, rng: np.random.Generator
) -> None:
    """Mask random extra real positions of ``rows`` up to ``min(floor, ceil(real / 2))``."""
    want = np.minimum(floor, (real.sum(axis=1) + 1) // 2)
    short = np.flatnonzero(rows & (masked.sum(axis=1) < want))
    if not short.size:
        return
    # Random order of each short window's unmasked real positions; take the first few.
    keys = rng.random((short.size, masked.shape[1]))
    keys[~real[short] | masked[short]] = np.inf
    order = np.argsort(keys, axis=1)
    missing = want[short] - masked[short].sum(axis=1)
    take = np.arange(masked.shape[1])[None, :] < missing[:, None]
    r, c = np.nonzero(take)
    masked[short[r], order[r, c]] = True
