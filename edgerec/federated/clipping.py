"""Per-device L2 clipping of a federated update (the DP sensitivity bound)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["clip_l2"]


def clip_l2(delta: np.ndarray, clip: float) -> tuple[np.ndarray, float]:
    """Scale ``delta`` so its L2 norm is at most ``clip``: ``delta * min(1, C / ||delta||)``.

    Args:
        delta: the update (any shape, float); not modified.
        clip: the bound ``C`` (> 0).

    Returns:
        ``(clipped, norm)``: a new float64 array and the L2 norm of ``delta`` *before*
        clipping (so callers can log how often clipping bites).

    Raises:
        ValueError: ``clip`` is not positive and finite, or ``delta`` holds NaN/inf.
    """
    if not (isinstance(clip, int | float) and math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be a positive finite number (got {clip!r})")
    arr = np.array(delta, dtype=np.float64, copy=True)
    if not np.all(np.isfinite(arr)):
        raise ValueError("update holds NaN or infinite values; refusing to clip it")
    norm = float(np.linalg.norm(arr.ravel()))
    if norm > clip:
        arr *= clip / norm
    return arr, norm
