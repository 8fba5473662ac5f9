"""Popularity prior: the score vector used when a user has no usable history.

The converter ships item counts in the bundle as ``popularity.npy`` (int64,
shape ``(n,)``, ``counts[j]`` is item index ``j + 1`` — the model output
convention). :class:`PopularityPrior` turns them into a score vector that ranks
exactly like :class:`edgerec.baselines.MostPopular`: count descending, equal
counts by lower index first. The order is encoded in the score (``n`` for the
most popular item down to ``1``), so it stays exact in float32 however large the
counts are, and :class:`~edgerec.runtime.ranking.TopK` can rank it like any
model output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.errors import InputError

__all__ = ["PopularityPrior"]


class PopularityPrior:
    """Fallback scores from item popularity counts.

    Args:
        counts: ``(n,)`` non-negative integer counts (int64 from the bundle; any
            integer dtype, or whole-number floats, is accepted).

    Example::

        prior = PopularityPrior.load(bundle_dir / "popularity.npy", num_items=vocab.num_items)
        if stats.empty:
            idx, sc = topk.query(prior.scores, k=10)
    """

    __slots__ = ("_counts", "_scores")

    def __init__(self, counts: Any) -> None:
        arr = np.asarray(counts)
        if arr.ndim != 1 or arr.shape[0] < 1:
            raise InputError(f"popularity counts must be a non-empty 1-D array (got {arr.shape})")
        if arr.dtype == bool or not (
            np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
        ):
            raise InputError(f"popularity counts must be integers (got dtype {arr.dtype})")
        if np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all() or not np.array_equal(arr, np.floor(arr)):
                raise InputError("popularity counts must be whole, finite numbers")
            if np.abs(arr).max() >= 2**63:
                raise InputError("popularity counts do not fit in int64")
        if arr.min() < 0:
            raise InputError(f"popularity counts must be >= 0 (got {arr.min()})")
        counts64 = arr.astype(np.int64)
        counts64.flags.writeable = False
        n = counts64.shape[0]
        order = np.argsort(-counts64, kind="stable")  # count desc, index asc
        scores = np.empty(n, np.float32)
        scores[order] = np.arange(n, 0, -1, dtype=np.float32)
        scores.flags.writeable = False
        self._counts = counts64
        self._scores = scores

    @classmethod
    def load(cls, path: str | os.PathLike[str], num_items: int | None = None) -> PopularityPrior:
        """Read counts from a ``.npy`` file or a JSON file.

        JSON may be a list of counts or an object with a ``"counts"`` list.
        ``num_items``, when given, must equal the number of counts.
        """
        path = Path(path)
        try:
            if path.suffix == ".json":
                data = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(data, dict):
                    if "counts" not in data:
                        raise InputError(f"{path}: JSON object has no 'counts' field")
                    data = data["counts"]
                if not isinstance(data, list) or not all(
                    isinstance(c, int) and not isinstance(c, bool) for c in data
                ):
                    raise InputError(f"{path}: 'counts' must be a list of integers")
                counts = np.array(data, dtype=np.int64) if data else np.zeros(0, np.int64)
            else:
                counts = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise InputError(f"{path}: popularity file not found") from None
        except (ValueError, OSError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{path}: not a popularity counts file ({exc})") from None
        try:
            prior = cls(counts)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
        if num_items is not None and prior.num_items != num_items:
            raise InputError(
                f"{path}: has {prior.num_items} counts but the vocabulary has {num_items} items"
            )
        return prior

    @classmethod
    def from_histories(cls, histories: Any, num_items: int) -> PopularityPrior:
        """Count item indices ``1..n`` in ``histories`` (iterable of index arrays; 0 ignored)."""
        arrays = [np.asarray(h, dtype=np.int64).ravel() for h in histories]
        items = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
        items = items[items != 0]
        if items.size and (items.min() < 1 or items.max() > num_items):
            raise InputError(f"histories hold indices outside 1..{num_items}")
        return cls(np.bincount(items, minlength=num_items + 1)[1:])

    @property
    def num_items(self) -> int:
        """Catalog size ``n``."""
        return int(self._counts.shape[0])

    @property
    def counts(self) -> np.ndarray:
        """``(n,)`` int64 counts (read-only)."""
        return self._counts

    @property
    def scores(self) -> np.ndarray:
        """``(n,)`` float32 read-only score vector: ``n`` for the most popular item, ``1`` last."""
        return self._scores

    def __repr__(self) -> str:
        return f"PopularityPrior(num_items={self.num_items}, total={int(self._counts.sum())})"
