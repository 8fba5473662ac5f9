"""Non-learned reference models for the full-ranking protocol of :mod:`edgerec.metrics`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from edgerec.errors import EdgerecError, InputError
from edgerec.vocab import PAD_ID

__all__ = ["MostPopular"]


class MostPopular:
    """Scores every item by how often it occurs in the training sequences.

    The same score vector is returned for every user. Output column ``j`` is
    item index ``j + 1`` (see :mod:`edgerec.vocab`).

    Tie-break: :func:`edgerec.metrics.target_ranks` breaks score ties against
    the target, which would rank a target last among all items sharing its
    count. To give the baseline a fixed, deterministic order instead, items with
    equal counts are ordered by index (lower index first). The order is encoded
    in the score itself: ``scores`` holds ``n - position`` where ``position`` is
    the item's place in the order (count descending, index ascending), so the
    top item scores ``n`` and the last ``1``. This is strictly decreasing, exact
    in float32 for catalogs up to 2**24 items, and ranks items exactly as the
    counts do wherever counts differ. (Subtracting ``index * eps`` from the raw
    counts would not survive float32 rounding for realistic counts.) The raw
    counts are in :attr:`counts`.

    Example::

        pop = MostPopular(vocab.num_items).fit(split.train)
        result = evaluate(pop.scores, split.test_inputs(), split.test_target)
    """

    def __init__(self, num_items: int) -> None:
        if int(num_items) < 1:
            raise InputError(f"num_items must be at least 1 (got {num_items})")
        self.num_items = int(num_items)
        self._counts: np.ndarray | None = None
        self._scores: np.ndarray | None = None

    def fit(self, sequences: Iterable[np.ndarray]) -> MostPopular:
        """Count item occurrences in ``sequences`` (indices ``1..n``; ``PAD_ID`` ignored).

        Returns ``self``. Refitting replaces the previous counts.
        """
        n = self.num_items
        arrays = [np.asarray(s).ravel() for s in sequences]
        items = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        if items.size and not np.issubdtype(items.dtype, np.integer):
            raise InputError(f"sequences must hold integer item indices (got {items.dtype})")
        items = items.astype(np.int64, copy=False)
        items = items[items != PAD_ID]
        if items.size and (items.min() < 1 or items.max() > n):
            bad = items[(items < 1) | (items > n)][0]
            raise InputError(f"item {int(bad)} is not an item index (valid: 1..{n})")
        counts = np.bincount(items, minlength=n + 1)[1:].astype(np.int64)
        # Stable sort on -count keeps lower indices first among equal counts.
        order = np.argsort(-counts, kind="stable")
        scores = np.empty(n, dtype=np.float32)
        scores[order] = np.arange(n, 0, -1, dtype=np.float32)
        self._counts = counts
        self._scores = scores
        return self

    def _require_fit(self) -> np.ndarray:
        if self._scores is None:
            raise EdgerecError("MostPopular: call fit() before scoring")
        return self._scores

    @property
    def counts(self) -> np.ndarray:
        """``(n,)`` int64 training occurrences; ``counts[j]`` is item ``j + 1``."""
        self._require_fit()
        assert self._counts is not None
        return self._counts.copy()

    @property
    def score_vector(self) -> np.ndarray:
        """``(n,)`` float32 score shared by all users (see the class docstring)."""
        return self._require_fit().copy()

    def top_k(self, k: int) -> np.ndarray:
        """The ``k`` most popular item indices (``1..n``), best first."""
        scores = self._require_fit()
        k = max(0, min(int(k), self.num_items))
        return (np.argsort(-scores, kind="stable")[:k] + 1).astype(np.int64)

    def scores(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """``(B, n)`` float32 scores, the same popularity row for every history."""
        scores = self._require_fit()
        return np.tile(scores, (len(histories), 1))

    __call__ = scores
