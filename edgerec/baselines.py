"""Non-learned reference models for the full-ranking protocol of :mod:`edgerec.metrics`.

* :class:`MostPopular` — one popularity row for everyone.
* :class:`ItemTransition` — a first-order Markov model: how often item ``b`` followed
  item ``a`` in the training sequences, row-normalised, summed over the user's last
  ``last_k`` items with weights ``decay ** age``.
* :class:`ItemKNN` — item-to-item cosine similarity of co-occurrence within a user's
  sequence (items at most ``window`` positions apart), each item keeping its
  ``neighbours`` most similar items, scored from the recent items like the
  transition model.

Every model is fitted on training sequences only and scores ``(B, n)`` rows (column
``j`` is item ``j + 1``). Sequence models back off to popularity: items they give
no score are ordered by training count (an amount far below any real score), so a
short history does not leave most of the catalog tied against the target.
:func:`tune_on_validation` picks their few hyper-parameters on the validation
target; nothing here ever looks at a test target.

numpy only: sparse rows are kept as CSR arrays built with ``np.unique``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgerec.errors import EdgerecError, InputError
from edgerec.metrics import evaluate
from edgerec.vocab import PAD_ID

log = logging.getLogger(__name__)

__all__ = [
    "BASELINE_GRIDS",
    "ItemKNN",
    "ItemTransition",
    "MostPopular",
    "rows_per_batch",
    "TunedBaseline",
    "tune_on_validation",
]


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


# --------------------------------------------------------------------------- sequence models

#: added to every score: popularity in ``[0, 1)`` times this, far below any real score
_BACKOFF_SCALE = 1e-9


def _training_items(sequences: Iterable[np.ndarray], n: int) -> list[np.ndarray]:
    """The sequences as int64 arrays without padding, every item checked to be ``1..n``."""
    out = []
    for s in sequences:
        a = np.asarray(s).ravel()
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise InputError(f"sequences must hold integer item indices (got {a.dtype})")
        a = a.astype(np.int64, copy=False)
        a = a[a != PAD_ID]
        if a.size and (a.min() < 1 or a.max() > n):
            bad = a[(a < 1) | (a > n)][0]
            raise InputError(f"item {int(bad)} is not an item index (valid: 1..{n})")
        out.append(a)
    return out


def _pairs_at_offset(seqs: list[np.ndarray], offset: int) -> tuple[np.ndarray, np.ndarray]:
    """All ``(seq[t], seq[t + offset])`` pairs within each sequence."""
    src = [s[:-offset] for s in seqs if s.size > offset]
    dst = [s[offset:] for s in seqs if s.size > offset]
    if not src:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(src), np.concatenate(dst)


@dataclass(frozen=True)
class _SparseRows:
    """Item-to-item weights as CSR: row ``a`` (``1..n``) holds ``(b, weight)`` pairs."""

    indptr: np.ndarray  # (n + 2,): row a spans indptr[a] .. indptr[a + 1]
    indices: np.ndarray  # item indices 1..n
    data: np.ndarray  # float64 weights

    @classmethod
    def from_pairs(cls, n: int, src: np.ndarray, dst: np.ndarray) -> _SparseRows:
        """Count the ``(src, dst)`` pairs: row ``src`` gets ``(dst, count)``."""
        keys, sums = np.unique(src * (n + 1) + dst, return_counts=True)
        sums = sums.astype(np.float64)
        rows, cols = np.divmod(keys, n + 1)
        indptr = np.zeros(n + 2, np.int64)
        np.add.at(indptr, rows + 1, 1)
        return cls(np.cumsum(indptr), cols, sums)

    def row_of_each(self) -> np.ndarray:
        """The row (source item) of every stored entry."""
        return np.repeat(np.arange(self.indptr.size - 1), np.diff(self.indptr))

    def keep(self, mask: np.ndarray) -> _SparseRows:
        rows = self.row_of_each()[mask]
        indptr = np.zeros_like(self.indptr)
        np.add.at(indptr, rows + 1, 1)
        return _SparseRows(np.cumsum(indptr), self.indices[mask], self.data[mask])

    def weighted_rows(
        self, batch_rows: np.ndarray, items: np.ndarray, weights: np.ndarray, shape: tuple[int, int]
    ) -> np.ndarray:
        """``out[r] += w * row(item)`` for every ``(r, item, w)``, as a dense ``shape`` array."""
        starts, ends = self.indptr[items], self.indptr[items + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        flat = np.zeros(shape[0] * shape[1], np.float64)
        if total:
            which = np.repeat(np.arange(items.size), lengths)
            offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            pos = starts[which] + offsets
            cells = batch_rows[which] * shape[1] + (self.indices[pos] - 1)
            flat += np.bincount(cells, weights=self.data[pos] * weights[which], minlength=flat.size)
        return flat.reshape(shape)


class _RecentItemsModel:
    """Shared part of the sequence baselines: recency weights, back-off, scoring."""

    def __init__(self, num_items: int, last_k: int, decay: float) -> None:
        if int(num_items) < 1:
            raise InputError(f"num_items must be at least 1 (got {num_items})")
        if int(last_k) < 1:
            raise InputError(f"last_k must be at least 1 (got {last_k})")
        if not 0.0 < float(decay) <= 1.0:
            raise InputError(f"decay must be in (0, 1] (got {decay})")
        self.num_items = int(num_items)
        self.last_k = int(last_k)
        self.decay = float(decay)
        self._rows: _SparseRows | None = None
        self._backoff: np.ndarray | None = None

    def _set_backoff(self, seqs: list[np.ndarray]) -> None:
        counts = np.bincount(
            np.concatenate(seqs) if seqs else np.zeros(0, np.int64), minlength=self.num_items + 1
        )[1:].astype(np.float64)
        self._backoff = counts / (counts.max() + 1.0) * _BACKOFF_SCALE

    #: parameters :meth:`with_params` can change without a refit
    _scoring_params: tuple[str, ...] = ("last_k", "decay")

    def with_params(self, **params: Any) -> _RecentItemsModel:
        """A copy sharing the fitted rows, with other scoring parameters (no refit)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        for key, value in params.items():
            if key not in self._scoring_params:
                raise InputError(
                    f"{key} needs a refit; only {', '.join(self._scoring_params)} change here"
                )
            setattr(clone, key, type(getattr(self, key))(value))
        clone._refresh()
        return clone

    def _refresh(self) -> None:
        """Recompute what depends on the scoring parameters (nothing by default)."""

    def scores(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """``(B, n)`` float64 scores from each history's last ``last_k`` items."""
        if self._rows is None or self._backoff is None:
            raise EdgerecError(f"{type(self).__name__}: call fit() before scoring")
        rows, items, weights = [], [], []
        for b, h in enumerate(histories):
            h = np.asarray(h).ravel()
            h = h[h != PAD_ID][-self.last_k :].astype(np.int64)
            if h.size and (h.min() < 1 or h.max() > self.num_items):
                bad = h[(h < 1) | (h > self.num_items)][0]
                raise InputError(f"history item {int(bad)} is not an item index")
            rows.append(np.full(h.size, b, np.int64))
            items.append(h)
            weights.append(self.decay ** np.arange(h.size - 1, -1, -1, dtype=np.float64))
        shape = (len(histories), self.num_items)
        if not rows:
            return np.zeros(shape)
        out = self._rows.weighted_rows(
            np.concatenate(rows), np.concatenate(items), np.concatenate(weights), shape
        )
        out += self._backoff
        return out

    __call__ = scores


class ItemTransition(_RecentItemsModel):
    """First-order item transitions, summed over the last ``last_k`` items.

    ``P(b | a)`` is the share of training transitions out of ``a`` that went to
    ``b`` (self-transitions, i.e. repeats, included). A history ``h`` scores
    ``sum_j decay ** j * P(. | h[-1 - j])`` for ``j < last_k``.

    Example::

        markov = ItemTransition(vocab.num_items, last_k=5, decay=0.7).fit(split.train)
        result = evaluate(markov.scores, split.valid_inputs(), split.valid_target)
    """

    def __init__(self, num_items: int, last_k: int = 1, decay: float = 1.0) -> None:
        super().__init__(num_items, last_k, decay)

    @property
    def params(self) -> dict[str, Any]:
        return {"last_k": self.last_k, "decay": self.decay}

    def fit(self, sequences: Iterable[np.ndarray]) -> ItemTransition:
        """Count transitions ``seq[t] -> seq[t + 1]`` in ``sequences``; returns ``self``."""
        seqs = _training_items(sequences, self.num_items)
        src, dst = _pairs_at_offset(seqs, 1)
        rows = _SparseRows.from_pairs(self.num_items, src, dst)
        totals = np.zeros(self.num_items + 1)
        np.add.at(totals, rows.row_of_each(), rows.data)
        data = rows.data / totals[rows.row_of_each()]
        self._rows = _SparseRows(rows.indptr, rows.indices, data)
        self._set_backoff(seqs)
        return self


class ItemKNN(_RecentItemsModel):
    """Item-to-item cosine neighbours from co-occurrence within users' sequences.

    Two items co-occur when they are at most ``window`` positions apart in one
    user's training sequence (both orders, an item never with itself).
    ``sim(a, b) = C(a, b) / sqrt(N(a) * N(b))`` with ``N`` the item's training
    count; each item keeps its ``neighbours`` most similar items. A history scores
    ``sum_j decay ** j * sim(h[-1 - j], .)`` for ``j < last_k``.
    """

    def __init__(
        self,
        num_items: int,
        neighbours: int = 100,
        window: int = 10,
        last_k: int = 5,
        decay: float = 0.8,
    ) -> None:
        super().__init__(num_items, last_k, decay)
        if int(neighbours) < 1:
            raise InputError(f"neighbours must be at least 1 (got {neighbours})")
        if int(window) < 1:
            raise InputError(f"window must be at least 1 (got {window})")
        self.neighbours = int(neighbours)
        self.window = int(window)

    @property
    def params(self) -> dict[str, Any]:
        return {
            "neighbours": self.neighbours,
            "window": self.window,
            "last_k": self.last_k,
            "decay": self.decay,
        }

    def fit(self, sequences: Iterable[np.ndarray]) -> ItemKNN:
        """Build the neighbour lists from ``sequences``; returns ``self``."""
        n = self.num_items
        seqs = _training_items(sequences, n)
        src_parts, dst_parts = [], []
        for offset in range(1, self.window + 1):
            src, dst = _pairs_at_offset(seqs, offset)
            if not src.size:
                break
            keep = src != dst
            src_parts += [src[keep], dst[keep]]
            dst_parts += [dst[keep], src[keep]]
        src = np.concatenate(src_parts) if src_parts else np.zeros(0, np.int64)
        dst = np.concatenate(dst_parts) if dst_parts else np.zeros(0, np.int64)
        rows = _SparseRows.from_pairs(n, src, dst)
        counts = np.bincount(
            np.concatenate(seqs) if seqs else np.zeros(0, np.int64), minlength=n + 1
        ).astype(np.float64)
        row_of = rows.row_of_each()
        sim = rows.data / np.sqrt(counts[row_of] * counts[rows.indices])
        # Within each row, rank entries by similarity (ties: lower item first).
        order = np.lexsort((rows.indices, -sim, row_of))
        rank = np.empty(order.size, np.int64)
        rank[order] = np.arange(order.size) - rows.indptr[row_of[order]]
        self._all_neighbours = (_SparseRows(rows.indptr, rows.indices, sim), rank)
        self._refresh()
        self._set_backoff(seqs)
        return self

    _scoring_params = ("last_k", "decay", "neighbours")

    def _refresh(self) -> None:
        if getattr(self, "_all_neighbours", None) is not None:
            rows, rank = self._all_neighbours
            self._rows = rows.keep(rank < self.neighbours)


# --------------------------------------------------------------------------- tuning

#: hyper-parameter grids searched on validation, per baseline name
BASELINE_GRIDS: dict[str, dict[str, tuple[Any, ...]]] = {
    "item transition": {"last_k": (1, 2, 3, 5, 10, 20), "decay": (0.3, 0.5, 0.7, 0.9)},
    "item kNN": {
        "window": (3, 10, 30),
        "neighbours": (20, 100, 400),
        "last_k": (3, 10, 30),
        "decay": (0.7, 0.9),
    },
}
#: the parameters of each baseline that need a refit (the rest only change scoring)
_FIT_PARAMS = {"item transition": (), "item kNN": ("window",)}
#: co-occurrence pairs an item-kNN fit may count; larger windows are left out of the
#: search on logs where they would exceed it (memory of the np.unique pass)
MAX_KNN_PAIRS = 50_000_000
_MODELS: dict[str, Callable[..., _RecentItemsModel]] = {
    "item transition": ItemTransition,
    "item kNN": ItemKNN,
}


@dataclass
class TunedBaseline:
    """A baseline with the hyper-parameters that scored best on validation.

    ``valid_ndcg`` is that best validation NDCG@10; ``searched`` every grid point
    tried with its validation NDCG@10.
    """

    name: str
    params: dict[str, Any]
    valid_ndcg: float
    searched: list[tuple[dict[str, Any], float]] = field(default_factory=list)

    def build(self, num_items: int) -> _RecentItemsModel:
        """An unfitted model with the chosen parameters."""
        return _MODELS[self.name](num_items, **self.params)


def rows_per_batch(num_items: int) -> int:
    """Users per scoring batch so that a ``(B, n)`` float64 block stays near 128 MB."""
    return max(1, min(256, (1 << 24) // max(int(num_items), 1)))


def _ndcg10(score_fn: Callable, inputs: Sequence[np.ndarray], targets: np.ndarray, n: int) -> float:
    result = evaluate(score_fn, inputs, targets, ks=(10,), batch_size=rows_per_batch(n))
    return float(result.metrics["NDCG@10"])


def tune_on_validation(
    name: str,
    num_items: int,
    train: Sequence[np.ndarray],
    valid_target: np.ndarray,
    grid: Mapping[str, Sequence[Any]] | None = None,
    max_users: int | None = 5000,
    seed: int = 0,
) -> TunedBaseline:
    """Grid-search a sequence baseline's parameters on the validation target.

    The model is fitted on ``train`` (each user's sequence without the validation
    and test items) and scores ``train[u]`` against ``valid_target[u]``; the grid
    point with the best NDCG@10 wins (ties: the first in grid order). With more
    than ``max_users`` users, a fixed random sample of that many (``seed``) is
    scored, which keeps the search cheap on large logs.
    """
    if name not in _MODELS:
        raise InputError(f"unknown baseline {name!r} (choose from {', '.join(_MODELS)})")
    grid = dict(grid if grid is not None else BASELINE_GRIDS[name])
    valid_target = np.asarray(valid_target)
    if len(train) != valid_target.shape[0]:
        raise InputError(
            f"train ({len(train)} users) and valid_target ({valid_target.shape[0]}) differ"
        )
    users = np.arange(len(train))
    if max_users is not None and len(train) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(len(train), max_users, replace=False))
    inputs = [train[u] for u in users]
    targets = valid_target[users]
    if name == "item kNN" and "window" in grid:
        events = sum(len(s) for s in train)
        fitting = [w for w in grid["window"] if 2 * events * w <= MAX_KNN_PAIRS]
        if len(fitting) < len(grid["window"]):
            log.info("item kNN: windows %s left out (over %d pairs)", grid["window"], MAX_KNN_PAIRS)
        grid["window"] = tuple(fitting) or (min(grid["window"]),)
    fit_keys = [k for k in grid if k in _FIT_PARAMS[name]]
    score_keys = [k for k in grid if k not in _FIT_PARAMS[name]]
    searched: list[tuple[dict[str, Any], float]] = []
    for fit_values in itertools.product(*(grid[k] for k in fit_keys)):
        fit_params = dict(zip(fit_keys, fit_values, strict=True))
        fitted = _MODELS[name](num_items, **fit_params).fit(train)
        for score_values in itertools.product(*(grid[k] for k in score_keys)):
            score_params = dict(zip(score_keys, score_values, strict=True))
            model = fitted.with_params(**score_params)
            searched.append(
                ({**fit_params, **score_params}, _ndcg10(model, inputs, targets, num_items))
            )
    best_params, best = max(searched, key=lambda pair: pair[1])  # first maximum wins
    return TunedBaseline(name, best_params, best, searched)
